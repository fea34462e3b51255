"""Experiments on the method and its baselines: run from the checkout as `python -m experiments.<name>`, never installed."""
