"""`python -m benchmarks`: the unified table of benchmarks/run.py."""
import sys

from benchmarks.run import main

sys.exit(main())
