"""The one finite-difference helper every gradient test uses."""
import numpy as np


def numerical_gradient(f, x, eps=1e-6):
    """Central differences of the scalar function f() with respect to the array x, perturbed in place."""
    grad = np.zeros_like(x, dtype=np.float64)
    flat = x.reshape(-1)
    grad_flat = grad.reshape(-1)
    for i in range(flat.size):
        original = flat[i]
        flat[i] = original + eps
        plus = f()
        flat[i] = original - eps
        minus = f()
        flat[i] = original
        grad_flat[i] = (plus - minus) / (2 * eps)
    return grad


def assert_gradients_close(analytic, numeric, rtol=1e-5, atol=1e-7, name="gradient"):
    """Relative error per element, tolerant where both are near zero."""
    analytic = np.asarray(analytic, dtype=np.float64)
    numeric = np.asarray(numeric, dtype=np.float64)
    assert analytic.shape == numeric.shape, f"{name}: shape {analytic.shape} != {numeric.shape}"
    scale = np.maximum(np.abs(analytic), np.abs(numeric))
    error = np.abs(analytic - numeric)
    bad = error > atol + rtol * scale
    assert not bad.any(), (
        f"{name}: {bad.sum()} of {bad.size} entries differ, worst |analytic - numeric| = {error.max():.3g} "
        f"(analytic {analytic.reshape(-1)[error.argmax()]:.6g}, numeric {numeric.reshape(-1)[error.argmax()]:.6g})"
    )


def check_layer_gradients(layer, x, training=True, seed=0, rtol=1e-5, atol=1e-7, keep=None):
    """Compare a layer's input and parameter gradients with central differences of L = sum(y * G).

    G is a fixed random projection, so every output element contributes with a distinct weight;
    `keep`, a boolean mask broadcastable to y, zeroes G elsewhere (a sparse dL/dy).
    The layer must already be float64; x must be float64.
    """
    rng = np.random.default_rng(seed)
    y = layer.forward(x, training)
    projection = rng.standard_normal(y.shape)
    if keep is not None:
        projection = projection * keep

    def loss():
        return float(np.sum(layer.forward(x, training) * projection))

    # Analytic gradients from one forward/backward at the unperturbed point.
    layer.forward(x, training)
    grad_x = layer.backward(projection.copy())
    grads = {k: v.copy() for k, v in layer.grads.items()}

    assert_gradients_close(grad_x, numerical_gradient(loss, x), rtol, atol, name="input")
    for key, value in layer.params.items():
        assert_gradients_close(grads[key], numerical_gradient(loss, value), rtol, atol, name=key)


def clear_of_kinks(network, x, margin=1e-5):
    """Whether central differences can be trusted through `network` at x: every leaky ReLU's input at least
    `margin` from its kink at 0 and every global max at least `margin` above its runner-up (a step of 1e-6
    in a parameter moves them by about that much). The layers run one by one on a copy, in training mode."""
    from nn import GlobalMaxPool2d, LeakyReLU

    x = np.array(x, dtype=np.float64)
    buffers = {key: value.copy() for key, value in network.buffers.items()}  # batch norms' running statistics
    try:
        for layer in network.layers:
            if isinstance(layer, LeakyReLU) and np.abs(x).min() <= margin:
                return False
            if isinstance(layer, GlobalMaxPool2d) and x.shape[1] * x.shape[2] > 1:
                ranked = np.sort(x.reshape(x.shape[0], -1, x.shape[-1]), axis=1)
                if (ranked[:, -1] - ranked[:, -2]).min() <= margin:
                    return False
            x = layer.forward(x, training=True)
        return True
    finally:
        for key, value in buffers.items():
            network.buffers[key][...] = value
