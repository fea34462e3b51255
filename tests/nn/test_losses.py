"""CrossEntropyLoss (fused softmax + CE) and nll_loss: values, gradients, stability at +-1e4."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from nn import CrossEntropyLoss, LogSoftmax, nll_loss
from tests.gradcheck import assert_gradients_close, numerical_gradient
from tests.strategies import extreme_logits, float_dtypes, logits_and_labels


@settings(max_examples=40)
@given(case=logits_and_labels())
def test_cross_entropy_gradient_matches_finite_differences(case):
    """dL/dlogits = (softmax(logits) - onehot(label)) / N equals central differences of the mean loss."""
    logits, labels = case
    loss = CrossEntropyLoss()
    loss.forward(logits, labels)
    analytic = loss.backward()
    numeric = numerical_gradient(lambda: loss.forward(logits, labels), logits)
    assert_gradients_close(analytic, numeric, name="logits")


@settings(max_examples=40)
@given(case=logits_and_labels())
def test_cross_entropy_equals_log_softmax_then_nll_loss(case):
    """The fused loss and its gradient equal LogSoftmax followed by nll_loss, chained by hand."""
    logits, labels = case
    fused = CrossEntropyLoss()
    fused_value = fused.forward(logits, labels)
    fused_grad = fused.backward()

    log_softmax = LogSoftmax()
    composed_value, grad_log_probabilities = nll_loss(log_softmax.forward(logits), labels)
    composed_grad = log_softmax.backward(grad_log_probabilities)

    np.testing.assert_allclose(fused_value, composed_value, rtol=1e-12)
    np.testing.assert_allclose(fused_grad, composed_grad, rtol=1e-10, atol=1e-15)


@settings(max_examples=30)
@given(case=logits_and_labels())
def test_nll_loss_gradient_matches_finite_differences(case):
    """nll_loss = -mean(log_p[label]) has gradient -1/N at each label and 0 elsewhere."""
    log_probabilities, labels = case
    value, analytic = nll_loss(log_probabilities, labels)
    np.testing.assert_allclose(value, -log_probabilities[np.arange(len(labels)), labels].mean())
    numeric = numerical_gradient(lambda: nll_loss(log_probabilities, labels)[0], log_probabilities)
    assert_gradients_close(analytic, numeric, name="log_probabilities")


@st.composite
def extreme_logits_and_labels(draw):
    """(N, K) logits mixing +-1e4 with ordinary values, labels in [0, K)."""
    dtype = draw(float_dtypes)
    logits = draw(extreme_logits(st.tuples(st.integers(1, 4), st.integers(1, 5)), dtype))
    n, k = logits.shape
    labels = np.asarray(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)), dtype=np.int64)
    return logits, labels


@settings(max_examples=40)
@given(case=extreme_logits_and_labels())
def test_cross_entropy_stays_finite_for_extreme_logits(case):
    """With logits of +-1e4 the loss is finite and >= 0, the gradient finite, each row summing to 0."""
    logits, labels = case
    loss = CrossEntropyLoss()
    value = loss.forward(logits, labels)
    grad = loss.backward()
    assert np.isfinite(value) and value >= 0
    assert grad.dtype == logits.dtype and np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-6 if logits.dtype == np.float32 else 1e-12)


def test_cross_entropy_of_a_confident_wrong_answer_is_the_logit_gap():
    """Label logit -1e4 against a 1e4 rival: loss = 2e4 exactly (a separate softmax would give log 0 = inf)."""
    loss = CrossEntropyLoss()
    value = loss.forward(np.array([[1e4, -1e4]]), np.array([1]))
    np.testing.assert_allclose(value, 2e4)
    np.testing.assert_allclose(loss.backward(), [[1.0, -1.0]])
