"""Dense: y = x W + b over the last axis, backward against finite differences."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from nn import Dense
from tests.gradcheck import check_layer_gradients
from tests.strategies import feature_counts, leading_shapes, normal_array, seeds


def make_dense(in_features, out_features, bias, seed):
    """A float64 Dense with a random (non-zero) bias."""
    layer = Dense(in_features, out_features, bias=bias, rng=seed).astype(np.float64)
    if bias:
        layer.params["bias"][...] = normal_array(seed + 1, out_features)
    return layer


@settings(max_examples=30)
@given(leading=leading_shapes(), in_features=feature_counts, out_features=feature_counts,
       bias=st.booleans(), seed=seeds)
def test_gradients_match_finite_differences(leading, in_features, out_features, bias, seed):
    """dL/dx, dL/dweight, dL/dbias equal central differences, also with extra leading axes (N, P, D)."""
    layer = make_dense(in_features, out_features, bias, seed)
    x = normal_array(seed + 2, (*leading, in_features))
    check_layer_gradients(layer, x, seed=seed)


@settings(max_examples=30)
@given(leading=leading_shapes(), in_features=feature_counts, out_features=feature_counts,
       bias=st.booleans(), seed=seeds)
def test_forward_is_affine_map_over_last_axis(leading, in_features, out_features, bias, seed):
    """y[..., o] = sum_i x[..., i] W[i, o] + b[o]."""
    layer = make_dense(in_features, out_features, bias, seed)
    x = normal_array(seed + 2, (*leading, in_features))
    expected = np.einsum("...i,io->...o", x, layer.params["weight"]) + layer.params.get("bias", 0.0)
    y = layer.forward(x)
    assert y.shape == (*leading, out_features)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
