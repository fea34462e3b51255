"""What the command lines share: argument types that say what is wrong in one line, a parser whose
errors are one line too (no usage block), like every other error of the programs, and the training flags."""
import argparse
import math

from ..models import AGGREGATES, ATTENTION_INITS, ATTENTION_PADDINGS, ATTENTION_SYMMETRIES, ESTIMATORS, REWARDS, SAMPLINGS
from ..patches import BORDERS
from .settings import LR_DROP, TISSUE_MODES, TRAINING_DEFAULTS


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


# The training flags, by destination: how each is parsed and what it means, written once for train.py and
# the experiments; each caller chooses the flags it offers and their defaults (add_training_flags).
TRAINING_FLAGS = {
    "patches": (dict(type=positive_int, metavar="P"), "patches P sampled per image"),
    "size": (dict(type=positive_int, metavar="S"), "patch side S in full-resolution pixels"),
    "scale": (dict(type=positive_int, metavar="C"), "down-scaling factor c of the attention view"),
    "epochs": (dict(type=positive_int, metavar="N"), "epochs of training"),
    "batch_size": (dict(type=positive_int, metavar="N"), "images per training step"),
    "replicas": (dict(type=positive_int, metavar="R"), "fresh samples of each image per step"),
    "lr": (dict(type=positive_float, metavar="LR"), "Adam learning rate"),
    "lr_drops": (dict(type=positive_int, nargs="+", metavar="E"),
                 f"multiply the learning rate by {LR_DROP} after each epoch E"),
    "entropy": (dict(type=non_negative_float, metavar="LAMBDA"), "weight lambda of the attention-entropy bonus"),
    "temperature": (dict(type=positive_float, metavar="T"), "classifier temperature: o = softmax(T x eq. 1)"),
    "border": (dict(choices=BORDERS),
               "what a patch sees where it leaves the image: zeros, the image mirrored, or the patch shifted inside"),
    "floor": (dict(type=non_negative_fraction, metavar="EPS"),
              "sample cells from (1 - EPS) a + EPS / cells: every cell stays reachable"),
    "attention_init": (dict(choices=ATTENTION_INITS),
                       "start the attention uniform (its last layer zeroed) or as drawn (the original method)"),
    "attention_padding": (dict(choices=ATTENTION_PADDINGS),
                          "how the attention network's convolutions fill the view's border: mirrored, repeated, or "
                          "zeros (the original method, which favours border cells)"),
    "attention_symmetry": (dict(choices=ATTENTION_SYMMETRIES),
                           "the attention network's 3x3 kernels: free, or mirror-symmetric (flips), so that its "
                           "attention on a spot is centred on it"),
    "feature_width": (dict(type=positive_int, metavar="W"), "channels of the feature network's convolutions"),
    "seed": (dict(type=int, metavar="N"), "seed of the split, the model and the sampling"),
    "test_fraction": (dict(type=fraction, metavar="F"),
                      "share of each class held out for testing, never used to choose anything"),
    "val_fraction": (dict(type=non_negative_fraction, metavar="F"),
                     "share of each class held out for validation, on which the best epoch (best.npz) is chosen; "
                     "0: none, the last epoch is taken"),
    "val_repeats": (dict(type=positive_int, metavar="K"),
                    "scorings of the validation split after each epoch, one look of P patches per image each; the "
                    "best epoch is chosen on their mean accuracy (more: a choice less at the mercy of one draw, for K "
                    "times the validation time)"),
    "average_from": (dict(type=non_negative_int, metavar="E"),
                     "from the end of epoch E on, keep the mean of the weights after each epoch in average.npz, "
                     "stochastic weight averaging (evaluate.py --checkpoint average), meant for the epochs after a "
                     "learning-rate drop; 0: none"),
    "estimator": (dict(choices=ESTIMATORS),
                  "attention gradient: reinforce (the paper) or expectation (unbiased, no reward)"),
    "sampling": (dict(choices=SAMPLINGS), "draw patches with or without replacement"),
    "aggregate": (dict(choices=AGGREGATES),
                  "REINFORCE's classifier: the mean of the P sampled features, the Monte-Carlo estimate of E_a[f], or "
                  "eq. 1, the features weighted by their attention a_i / sum a (a cell drawn k times counts k a_i)"),
    "reward": (dict(choices=REWARDS),
               "REINFORCE's reward: each patch's own probability of the true class, or each look's, its P patches "
               "classified together (which rewards a look for holding more of the evidence)"),
    "contrast": (dict(type=non_negative_fraction, metavar="F"),
                 "contrast augmentation: pixels scaled about the image's mean by a factor drawn from [1 - F, 1 + F]; "
                 "0: none"),
    "zoom": (dict(type=non_negative_float, metavar="Z"),
             "zoom augmentation: a crop of 1 / z of each side resized back, z drawn from [1, 1 + Z]; 0: none"),
    "no_augment": (dict(action="store_true"), "turn off random flips, contrast and zoom"),
    "tissue": (dict(choices=TISSUE_MODES),
               "auto: sample patches on tissue only, found on each image's attention view (Otsu on the saturation); "
               "none: everywhere"),
}


def add_training_flags(parser, names, defaults=None, notes=None):
    """Add the training flags `names` (keys of TRAINING_FLAGS) to `parser`. Each defaults to defaults[name] if
    given, else to TRAINING_DEFAULTS'; its help ends in (notes[name]) if given, else in (default D)."""
    defaults, notes = defaults or {}, notes or {}
    for name in names:
        options, meaning = TRAINING_FLAGS[name]
        if options.get("action") == "store_true":
            parser.add_argument(_flag(name), help=meaning, **options)
            continue
        default = defaults.get(name, TRAINING_DEFAULTS.get(name))
        parser.add_argument(_flag(name), default=default, help=f"{meaning} ({notes.get(name, f'default {default}')})",
                            **options)


def _flag(name):
    return "--" + name.replace("_", "-")
