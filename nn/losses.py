"""Loss functions: return a scalar, and the gradient with respect to their input."""
import numpy as np

from .softmax import log_softmax


class CrossEntropyLoss:
    """(N, K) logits, (N,) integer labels -> mean of -log softmax(logits)[label].

    Fused with the softmax because the pair's gradient is simply (softmax(logits) - onehot(label)) / N,
    which stays exact where a separate softmax would underflow.
    """

    def forward(self, logits, labels):
        labels = np.asarray(labels)
        self.log_probabilities = log_softmax(logits, axis=-1)
        self.labels = labels
        picked = np.take_along_axis(self.log_probabilities, labels[:, None], axis=1)[:, 0]
        return float(-picked.mean())

    def backward(self):
        n = self.labels.shape[0]
        grad = np.exp(self.log_probabilities)
        grad[np.arange(n), self.labels] -= 1
        return grad / grad.dtype.type(n)

    __call__ = forward


def nll_loss(log_probabilities, labels):
    """(N, K) log-probabilities, (N,) labels -> (loss, dL/dlog_probabilities)."""
    n = labels.shape[0]
    loss = -log_probabilities[np.arange(n), labels].mean()
    grad = np.zeros_like(log_probabilities)
    grad[np.arange(n), labels] = -1.0 / n
    return float(loss), grad
