"""Weight initialisers, seeded through numpy.random.Generator."""
import numpy as np


def kaiming_normal(rng, shape, fan_in, negative_slope=0.0, dtype=np.float32):
    """He et al. (2015): keeps the activation variance constant through (leaky) ReLU layers.

    A leaky ReLU with slope a passes (1 + a^2) / 2 of the variance, hence std = sqrt(2 / ((1 + a^2) fan_in)).
    """
    std = np.sqrt(2.0 / ((1.0 + negative_slope**2) * fan_in))
    return (rng.standard_normal(shape) * std).astype(dtype)


def glorot_uniform(rng, shape, fan_in, fan_out, dtype=np.float32):
    """Glorot & Bengio (2010): for layers not followed by a rectifier (the final linear maps)."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


def default_rng(rng):
    """Accept a Generator, a seed or None."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)
