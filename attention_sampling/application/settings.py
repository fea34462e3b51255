"""The training settings every entry point shares (train.py, the experiments), and their defaults.

One place, so that `train.py` and `experiments paper-table` cannot drift apart. Kept free of heavy
imports: train.py --help reads it before NumPy's kernels are compiled.
"""
from dataclasses import asdict, dataclass, fields

from .errors import AttentionSamplingError


# What a run is made of; all of it is stored in the run's config.json and checked again on --resume.
@dataclass(frozen=True)
class Training:
    """The settings a run is trained with, typed; Training.from_dict(config) reads them from a run's config."""
    patches: int = 20            # P, patches sampled per image
    size: int = 50               # S, patch side in full-resolution pixels
    scale: int = 4               # c, down-scaling of the attention view
    batch_size: int = 8
    replicas: int = 4            # fresh looks at each image per step
    lr: float = 1e-3             # Adam
    lr_drops: tuple = ()         # epochs after which the learning rate is multiplied by LR_DROP (none: constant, as the paper)
    entropy: float = 0.05        # lambda of the attention-entropy bonus, as the reference implementation (REINFORCE)
    temperature: float = 3.0     # T of the classifier softmax(T x eq. 1), as the reference implementation
    border: str = "reflect"      # what a patch sees past the image edge: zero, reflect or inside
    floor: float = 0.0           # eps of the uniform floor mixed into the attention when sampling
    # How the attention starts: drawn at random (the original method), or uniform (its last layer at zero).
    # Random by default: a uniform start on the embedded set stays uniform, and at chance
    # (docs/experiments/slides.md, docs/results/embedded/S50-P20-seed0-uniform-start.log).
    attention_init: str = "random"
    # How the attention network's convolutions pad the view: reflected, so that a flat view stays flat up to its
    # edge; zeros put a fresh network's weight on the border (docs/results/border/).
    attention_padding: str = "reflect"
    # Its 3x3 kernels free (the original method) or mirror-symmetric ("flips", models.AttentionNetwork).
    attention_symmetry: str = "none"
    seed: int = 0
    test_fraction: float = 0.15  # 70 / 15 / 15, as the reference implementation splits
    val_fraction: float = 0.15
    # Scorings of the validation split after each epoch (one look of P patches per image each), whose mean
    # accuracy chooses best.npz: one scoring of a few dozen images moves by several points from draw to draw
    # (docs/experiments/lymphoma.md).
    val_repeats: int = 1
    # Weight averaging: from this epoch on, average.npz holds the mean of the model's weights (and batch-norm
    # statistics) after each epoch, the stochastic weight averaging of Izmailov et al. (2018). 0: none.
    average_from: int = 0
    estimator: str = "reinforce"
    sampling: str = "with"
    # REINFORCE's classifier: the sampled features' mean, not eq. 1's weights a_i / sum a, which count a cell drawn
    # k times as k a_i; chosen on the validation splits of lymphoma and the embedded set
    # (docs/results/lymphoma/tuning/README.md).
    aggregate: str = "mean"
    # What REINFORCE rewards: each patch alone, as the method, or each look (its P patches together).
    reward: str = "patch"
    # Channels of the feature network's convolutions: 16 as the paper's lymphoma network (its Megapixel MNIST
    # network has 32).
    feature_width: int = 16
    # Augmentation strengths (flips are on unless --no-augment): contrast factor from [1 - contrast, 1 + contrast],
    # zoom z from [1, 1 + zoom] (a crop of 1 / z of each side resized back), as the paper's.
    contrast: float = 0.3
    zoom: float = 0.2
    # Sample only cells on tissue (auto, application/tissue.py) or every cell (none); a run's default depends on
    # its data (default_tissue), so TRAINING_DEFAULTS leaves it out.
    tissue: str = "none"

    @classmethod
    def from_dict(cls, config, source="the run's config"):
        """A run's config (a dict, as config.json holds it) -> its Training; a setting the run was made before
        has what the run was trained with (LEGACY), one that every run stores and a partial config lacks, its
        default. A mistyped value is a one-line error naming `source`."""
        values = {field.name: _typed(field.name, config[field.name], field.type, source)
                  for field in fields(cls) if field.name in config}
        return cls(**{**{key: value for key, value in LEGACY.items() if key not in values}, **values})

    def to_dict(self):
        """-> the settings as config.json stores them (lists for tuples)."""
        return {field.name: list(value) if isinstance(value := getattr(self, field.name), tuple) else value
                for field in fields(self)}


def _typed(name, value, kind, source):
    """A config value checked against its field's type (an int is a float too; a list is a tuple)."""
    if kind is tuple and isinstance(value, (list, tuple)) and all(_is_int(v) for v in value):
        return tuple(value)
    if kind is float and (_is_int(value) or isinstance(value, float)):
        return float(value)
    if (kind is int and _is_int(value)) or (kind is str and isinstance(value, str)):
        return value
    raise AttentionSamplingError(f"{source}: {name} = {value!r} is not {'a list of ints' if kind is tuple else 'a ' + kind.__name__}")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


TRAINING_DEFAULTS = {key: value for key, value in asdict(Training()).items() if key != "tissue"}  # for argparse and help

# What a run made before a setting existed was trained with: it is rebuilt, resumed and evaluated so, whatever
# today's defaults are, and a flag typed on resuming it is compared with these.
LEGACY = dict(temperature=1.0, border="zero", floor=0.0, attention_init="random", val_fraction=0.0, val_repeats=1,
              average_from=0, estimator="reinforce", sampling="with", lr_drops=(), contrast=0.3, zoom=0.2,
              aggregate="attention", attention_padding="zero", tissue="none", reward="patch",
              attention_symmetry="none")


# --tissue: the attention samples only cells on tissue (auto, application/tissue.py), or every cell (none).
TISSUE_MODES = ("auto", "none")
# --tissue's default: the tissue mask on whole-slide images, mostly glass; none on plain images, whose background
# may be the evidence's (Megapixel MNIST is grey digits on black, which holds no colour to threshold).
def default_tissue(lazy):
    """The --tissue mode a run takes when none is typed: "auto" for a data set of slides, else "none"."""
    return "auto" if lazy else "none"


def scoring_seed(seed, epoch, repeat=0):
    """The sampling seed with which training scores the validation and test images after epoch `epoch`
    (1-based): re-scoring a checkpoint with it reproduces metrics.csv. `repeat` k > 0 is the validation's
    (k+1)-th scoring (--val-repeats): a stream of its own, apart from every epoch's first."""
    return seed + epoch - 1 if repeat == 0 else [seed, epoch, repeat]


def average_changed(start, before, trained):
    """Whether moving the weight average's first epoch from `before` to `start` (0: none) would change an
    average a run has begun in its first `trained` epochs: it may only move while neither has begun."""
    return start != before and any(0 < epoch <= trained for epoch in (start, before))


def drops_changed(drops, before, trained):
    """Whether the learning-rate drops `drops` would change any of the first `trained` epochs of a run made
    with `before`: only drops from epoch `trained` on may be added, moved or removed."""
    return [d for d in drops if d < trained] != [d for d in before if d < trained]


# Settings a resumed run may change: they decide how long it runs and which files are data, not the model.
# (Which files are data is checked on its own: config['image_list'] must not change.)
RESUMABLE = ("epochs", "bad_images", "max_pixels")


def resumed(saved, asked, started):
    """A run's saved config (a dict, as config.json holds it), the settings asked for on resuming it and the
    epochs it has trained, whole or in part -> the config it continues with. Only what changes nothing the
    run has done may differ: its length (RESUMABLE), learning-rate drops from epoch `started` on and a
    weight average not yet begun; anything else is a one-line error naming the flag."""
    asked, trained = dict(asked), Training.from_dict(saved)
    if "lr_drops" in asked:
        asked["lr_drops"] = _resumed_drops(list(asked["lr_drops"]), list(trained.lr_drops), started)
        saved = {**saved, "lr_drops": asked["lr_drops"]}
    if "average_from" in asked:
        saved = {**saved, "average_from": _resumed_average(asked["average_from"], trained.average_from, started)}
    for key, value in asked.items():
        # A setting the run was made before: compared with what it was trained with (LEGACY).
        before = saved[key] if key in saved else LEGACY.get(key, value)
        if key not in RESUMABLE and value != before:
            raise AttentionSamplingError(_kept_message(key, before, value))
    return {**saved, **{key: asked[key] for key in RESUMABLE if key in asked}}


def _resumed_drops(drops, before, started):
    """The drops a resumed run takes, if they leave its first `started` epochs' learning rates as they were."""
    if drops_changed(drops, before, started):
        raise AttentionSamplingError(
            f"the run has trained {started} epoch(s) with learning-rate drops after "
            f"{_epochs_text([d for d in before if d < started]) or 'none'}; --lr-drops {_epochs_text(drops) or '(none)'} "
            f"would change them; only drops from epoch {started} on can be changed")
    return drops


def _resumed_average(start, before, started):
    """The weight average's first epoch a resumed run takes, if neither it nor the run's own has begun."""
    if average_changed(start, before, started):
        raise AttentionSamplingError(
            f"the run has trained {started} epoch(s) and averages its weights from epoch {before or start} on; "
            f"--average-from {start} would change that average; only an average not yet begun can be moved")
    return start


def _kept_message(key, before, value):
    """Why a setting asked for on resuming cannot be taken, naming the flag (or the data) that sets it."""
    if key == "image_list":
        return (f"the data folder holds other images than when the run started ({before.get('count')} then, "
                f"{value.get('count')} now); a resumed run needs the same images: put them back, or start a new "
                "run with --out")
    flag = "--" + key.replace("_", "-") if key not in ("classes", "image_shape") else f"the data's {key}"
    return f"the run was made with {key} = {before}, not {value} ({flag}); a resumed run keeps its settings"


def _epochs_text(epochs):
    return " ".join(str(epoch) for epoch in epochs)


# What each of lr_drops multiplies the learning rate by.
LR_DROP = 0.1


def learning_rate(lr, lr_drops, epoch):
    """The learning rate of epoch `epoch` (1-based): lr times LR_DROP for each drop made before it."""
    return lr * LR_DROP ** sum(1 for drop in lr_drops if drop < epoch)


# The entropy bonus is weighed against the estimator's own signal, and REINFORCE's standardised advantage
# makes its gradient several times the exact one, which the expectation estimator's is
# (docs/results/gradients/); the weights were chosen on the few-spots validation split
# (docs/results/estimators/pilot/).
ENTROPY_BY_ESTIMATOR = {"reinforce": TRAINING_DEFAULTS["entropy"], "expectation": 0.001}

# Named sets of settings (train.py --recipe), each a set of flags' values that typed flags still override.
# "localized": evidence in a few small objects on a flat background (Megapixel MNIST). There the default
# entropy weight flattens the attention before the feature network can read anything, sampling with
# replacement collapses a look onto one or two cells, and flips change what an object is (a flipped 6 is
# a 9). And REINFORCE's per-patch rewards ask for the one best cell where the class needs several objects read
# together: the expectation estimator is ahead on its validation splits (docs/experiments/megapixel-mnist.md),
# as on the spots sets' (docs/experiments/estimators.md). A freely drawn attention network peaks beside each
# object, so its patches cut the objects; mirror-symmetric kernels centre them, ahead on the validation splits
# of Megapixel MNIST (three seeds) and the embedded set (docs/experiments/megapixel-mnist.md, "Where the patches sit").
RECIPES = {"default": {},
           "localized": dict(estimator="expectation", entropy=0.001, sampling="without", augment=False,
                             attention_symmetry="flips")}
