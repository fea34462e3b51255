"""An autograd-free layer library: each layer has a hand-written backward pass, channels-last (N, H, W, C)."""
from . import numba_cache  # first: every kernel cached below is saved the safe way  # noqa: F401
from .activations import LeakyReLU
from .batchnorm import BatchNorm2d
from .conv import Conv2d
from .dense import Dense
from .layer import Layer
from .losses import CrossEntropyLoss, nll_loss
from .normalize import L2Normalize
from .optim import Adam
from .pooling import AvgPool2d, GlobalAvgPool2d, GlobalMaxPool2d
from .sequential import Sequential
from .serialization import CheckpointError, load_arrays, save_arrays
from .softmax import LogSoftmax, Softmax, SpatialLogSoftmax, SpatialSoftmax, log_softmax, softmax

__all__ = [
    "Adam", "AvgPool2d", "BatchNorm2d", "CheckpointError", "Conv2d", "CrossEntropyLoss", "Dense",
    "GlobalAvgPool2d", "GlobalMaxPool2d", "L2Normalize", "Layer", "LeakyReLU", "LogSoftmax", "Sequential",
    "Softmax", "SpatialLogSoftmax", "SpatialSoftmax", "load_arrays", "log_softmax", "nll_loss", "save_arrays",
    "softmax",
]
