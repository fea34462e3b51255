"""Evaluate a trained attention-sampling run (not implemented yet)."""
import sys

if __name__ == "__main__":
    print("evaluate.py: not implemented yet", file=sys.stderr)
    sys.exit(1)
