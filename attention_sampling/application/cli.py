"""What the command lines share: argument types that say what is wrong in one line, and a parser whose
errors are one line too (no usage block), like every other error of the programs."""
import argparse
import math


def _number(kind, accept, requirement):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
        return value
    parse.__name__ = requirement  # argparse names the type in its messages
    return parse


positive_int = _number(int, lambda v: v > 0, "a positive integer")
non_negative_int = _number(int, lambda v: v >= 0, ">= 0")
positive_float = _number(float, lambda v: 0 < v < math.inf, "a positive number")
non_negative_float = _number(float, lambda v: 0 <= v < math.inf, "a number >= 0")
fraction = _number(float, lambda v: 0 < v < 1, "strictly between 0 and 1")
non_negative_fraction = _number(float, lambda v: 0 <= v < 1, ">= 0 and below 1")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (no usage block) and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
