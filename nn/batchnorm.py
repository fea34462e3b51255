"""Batch normalisation over the channels of a channels-last tensor."""
import numpy as np

from .layer import Layer


class BatchNorm2d(Layer):
    """(N, H, W, C) -> (N, H, W, C): y = gamma * (x - mean) / sqrt(var + eps) + beta, per channel.

    Training uses the batch's statistics over (N, H, W) and updates running ones
    (running = (1 - momentum) * running + momentum * batch, with the unbiased variance, as PyTorch);
    evaluation uses the running statistics.

    Backward in training: every output depends on the whole batch through mean and var. With x_hat the
    normalised input, g_hat = g * gamma / sqrt(var + eps) and means over the m values of a channel,
      dL/dx = g_hat - mean(g_hat) - x_hat * mean(g_hat * x_hat).
    """

    def __init__(self, channels, momentum=0.1, eps=1e-5, dtype=np.float32):
        super().__init__()
        self.momentum = momentum
        self.eps = eps
        self.params["gamma"] = np.ones(channels, dtype=dtype)
        self.params["beta"] = np.zeros(channels, dtype=dtype)
        self.buffers["running_mean"] = np.zeros(channels, dtype=dtype)
        self.buffers["running_var"] = np.ones(channels, dtype=dtype)
        self.zero_grads()

    def forward(self, x, training=True):
        axes = (0, 1, 2)
        self.training = training
        if training:
            mean = x.mean(axis=axes, dtype=np.float64).astype(x.dtype)
            centred = x - mean
            var = np.mean(np.square(centred), axis=axes, dtype=np.float64).astype(x.dtype)
            m = x.size // x.shape[-1]
            unbiased = var * (m / max(m - 1, 1))
            self.buffers["running_mean"] *= 1 - self.momentum
            self.buffers["running_mean"] += self.momentum * mean.astype(self.buffers["running_mean"].dtype)
            self.buffers["running_var"] *= 1 - self.momentum
            self.buffers["running_var"] += self.momentum * unbiased.astype(self.buffers["running_var"].dtype)
        else:
            mean = self.buffers["running_mean"].astype(x.dtype)
            var = self.buffers["running_var"].astype(x.dtype)
            centred = x - mean
        self.inv_std = (1.0 / np.sqrt(var + x.dtype.type(self.eps))).astype(x.dtype)
        self.normalised = centred * self.inv_std
        return self.normalised * self.params["gamma"] + self.params["beta"]

    def backward(self, grad_out):
        axes = (0, 1, 2)
        x_hat = self.normalised
        self.grads["gamma"] = np.sum(grad_out * x_hat, axis=axes)
        self.grads["beta"] = grad_out.sum(axis=axes)
        g_hat = grad_out * (self.params["gamma"] * self.inv_std)
        if not self.training:
            return g_hat  # running statistics are constants
        m = grad_out.size // grad_out.shape[-1]
        mean_g = self.grads["beta"] * (self.params["gamma"] * self.inv_std) / m
        mean_gx = self.grads["gamma"] * (self.params["gamma"] * self.inv_std) / m
        return g_hat - mean_g - x_hat * mean_gx

    def __repr__(self):
        return f"BatchNorm2d({self.params['gamma'].shape[0]})"
