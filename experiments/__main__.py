"""python -m experiments <command>: the paper's table, the estimator comparison, gradient statistics, looks."""
from experiments.runs import main

main()
