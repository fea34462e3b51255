"""Initialisers: reproducible from a seed, with the variances the papers prescribe."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nn import Conv2d, Dense
from nn.init import default_rng, glorot_uniform, kaiming_normal
from tests.strategies import negative_slopes, seeds

LARGE = (400, 500)  # 2e5 draws: the sample std is within 0.5% of the true one with overwhelming odds
fan_ins = st.integers(1, 5000)


@settings(max_examples=20)
@given(seed=seeds, fan_in=fan_ins, negative_slope=negative_slopes)
def test_kaiming_normal_is_reproducible_from_a_seed(seed, fan_in, negative_slope):
    """The same seed gives the same weights; another seed gives other weights."""
    first = kaiming_normal(np.random.default_rng(seed), (4, 5), fan_in, negative_slope)
    again = kaiming_normal(np.random.default_rng(seed), (4, 5), fan_in, negative_slope)
    other = kaiming_normal(np.random.default_rng(seed + 1), (4, 5), fan_in, negative_slope)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


@settings(max_examples=10)
@given(seed=seeds, fan_in=fan_ins, negative_slope=negative_slopes)
def test_kaiming_normal_std_matches_he_et_al(seed, fan_in, negative_slope):
    """std = sqrt(2 / ((1 + a^2) fan_in)) and mean 0, measured on a large draw."""
    weights = kaiming_normal(np.random.default_rng(seed), LARGE, fan_in, negative_slope, np.float64)
    std = np.sqrt(2.0 / ((1.0 + negative_slope**2) * fan_in))
    assert weights.std() == pytest.approx(std, rel=0.02)
    assert abs(weights.mean()) < 0.02 * std


@settings(max_examples=10)
@given(seed=seeds, fan_in=fan_ins, fan_out=fan_ins)
def test_glorot_uniform_stays_in_its_limits_with_the_right_std(seed, fan_in, fan_out):
    """Uniform on [-limit, limit], limit = sqrt(6 / (fan_in + fan_out)), hence std = limit / sqrt(3)."""
    weights = glorot_uniform(np.random.default_rng(seed), LARGE, fan_in, fan_out, np.float64)
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    assert np.all(np.abs(weights) <= limit)
    assert weights.std() == pytest.approx(limit / np.sqrt(3.0), rel=0.02)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_initialisers_return_the_requested_dtype(dtype):
    """Both initialisers cast to the dtype asked for."""
    rng = np.random.default_rng(0)
    assert kaiming_normal(rng, (2, 3), 6, dtype=dtype).dtype == dtype
    assert glorot_uniform(rng, (2, 3), 2, 3, dtype=dtype).dtype == dtype


@settings(max_examples=20)
@given(seed=seeds)
def test_layers_built_from_the_same_seed_are_identical(seed):
    """Conv2d and Dense built with the same rng seed have identical parameters; another seed differs."""
    for build in (lambda s: Conv2d(3, 4, 3, rng=s), lambda s: Dense(5, 6, rng=s)):
        first, again, other = build(seed), build(seed), build(seed + 1)
        for key in first.params:
            np.testing.assert_array_equal(first.params[key], again.params[key], err_msg=key)
        assert not np.array_equal(first.params["weight"], other.params["weight"])


@pytest.mark.parametrize("negative_slope", [0.0, 0.2])
def test_conv2d_weight_std_uses_its_fan_in(negative_slope):
    """Conv2d draws Kaiming weights with fan_in = kh * kw * C_in (the inputs of one output)."""
    layer = Conv2d(40, 64, (5, 8), rng=0, negative_slope=negative_slope)
    fan_in = 5 * 8 * 40
    expected = np.sqrt(2.0 / ((1.0 + negative_slope**2) * fan_in))
    assert layer.params["weight"].std() == pytest.approx(expected, rel=0.02)
    assert np.all(layer.params["bias"] == 0)


def test_dense_weight_follows_glorot():
    """Dense draws Glorot-uniform weights for its (D_in, D_out)."""
    layer = Dense(300, 500, rng=0)
    limit = np.sqrt(6.0 / 800)
    assert np.all(np.abs(layer.params["weight"]) <= limit)
    assert layer.params["weight"].std() == pytest.approx(limit / np.sqrt(3.0), rel=0.02)


def test_default_rng_accepts_generator_seed_and_none():
    """A Generator is used as is (its stream continues); a seed is reproducible; None gives a fresh Generator."""
    generator = np.random.default_rng(3)
    assert default_rng(generator) is generator
    assert default_rng(7).standard_normal() == np.random.default_rng(7).standard_normal()
    assert isinstance(default_rng(None), np.random.Generator)
