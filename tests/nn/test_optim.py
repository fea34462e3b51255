"""Adam: the first steps against the closed form, and resuming from a state dict."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from nn import Adam
from tests.strategies import leading_shapes, normal_array, seeds

learning_rates = st.sampled_from([1e-3, 0.01, 0.5])
beta1s = st.sampled_from([0.0, 0.5, 0.9])
beta2s = st.sampled_from([0.9, 0.999])


@settings(max_examples=30)
@given(shape=leading_shapes(), seed=seeds, lr=learning_rates, beta1=beta1s, beta2=beta2s)
def test_first_three_steps_match_closed_form(shape, seed, lr, beta1, beta2):
    """Steps t = 1, 2, 3 with gradients g1, g2, g3, expanding the moment recursions by hand."""
    eps = 1e-8
    p0 = normal_array(seed, shape)
    g1, g2, g3 = (normal_array(seed + t, shape) for t in (1, 2, 3))
    b1, b2 = beta1, beta2

    m1 = (1 - b1) * g1
    v1 = (1 - b2) * g1**2
    m2 = b1 * (1 - b1) * g1 + (1 - b1) * g2
    v2 = b2 * (1 - b2) * g1**2 + (1 - b2) * g2**2
    m3 = b1**2 * (1 - b1) * g1 + b1 * (1 - b1) * g2 + (1 - b1) * g3
    v3 = b2**2 * (1 - b2) * g1**2 + b2 * (1 - b2) * g2**2 + (1 - b2) * g3**2
    p1 = p0 - lr * (m1 / (1 - b1)) / (np.sqrt(v1 / (1 - b2)) + eps)
    p2 = p1 - lr * (m2 / (1 - b1**2)) / (np.sqrt(v2 / (1 - b2**2)) + eps)
    p3 = p2 - lr * (m3 / (1 - b1**3)) / (np.sqrt(v3 / (1 - b2**3)) + eps)

    optimiser = Adam(lr=lr, beta1=beta1, beta2=beta2, eps=eps)
    params = {"weight": p0.copy()}
    for g, expected in ((g1, p1), (g2, p2), (g3, p3)):
        optimiser.step(params, {"weight": g})
        np.testing.assert_allclose(params["weight"], expected, rtol=1e-10, atol=1e-14)
    assert optimiser.t == 3


@settings(max_examples=20)
@given(shape=leading_shapes(), seed=seeds, lr=learning_rates)
def test_first_step_moves_every_parameter_by_lr(shape, seed, lr):
    """At t = 1 bias correction makes the step lr * g / (|g| + eps), i.e. lr * sign(g) for |g| >> eps."""
    params = {"weight": normal_array(seed, shape)}
    start = params["weight"].copy()
    gradient = normal_array(seed + 1, shape) + np.sign(normal_array(seed + 2, shape)) * 1e-3
    Adam(lr=lr).step(params, {"weight": gradient})
    np.testing.assert_allclose(start - params["weight"], lr * np.sign(gradient), rtol=1e-4)


@settings(max_examples=25)
@given(shape=leading_shapes(), seed=seeds, steps_before=st.integers(0, 3), steps_after=st.integers(1, 3))
def test_state_dict_round_trip_continues_identically(shape, seed, steps_before, steps_after):
    """An Adam rebuilt from a copy of state_dict() takes exactly the same further steps as the original."""
    def gradients(t):
        return {"weight": normal_array(seed + 10 * t, shape), "bias": normal_array(seed + 10 * t + 1, shape[-1:])}

    original = Adam(lr=0.01)
    params = {"weight": normal_array(seed, shape), "bias": normal_array(seed + 1, shape[-1:])}
    for t in range(steps_before):
        original.step(params, gradients(t))

    restored = Adam(lr=0.01)
    restored.load_state_dict({k: np.array(v, copy=True) for k, v in original.state_dict().items()})
    restored_params = {k: v.copy() for k, v in params.items()}
    assert restored.t == original.t == steps_before

    for t in range(steps_before, steps_before + steps_after):
        original.step(params, gradients(t))
        restored.step(restored_params, gradients(t))
    for key in params:
        np.testing.assert_array_equal(restored_params[key], params[key], err_msg=key)
    for key, value in original.state_dict().items():
        np.testing.assert_array_equal(restored.state_dict()[key], value, err_msg=key)


def test_float32_parameters_stay_float32():
    """Updates are cast back to the parameter's dtype, so float32 models stay float32."""
    params = {"weight": np.ones(3, dtype=np.float32)}
    Adam().step(params, {"weight": np.array([1.0, -2.0, 3.0])})
    assert params["weight"].dtype == np.float32
