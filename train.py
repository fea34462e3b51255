"""Train an attention-sampling model (in progress: prints the layer library's gradient-check demo)."""
import sys

if __name__ == "__main__":
    print("train.py: not implemented yet", file=sys.stderr)
    sys.exit(1)
