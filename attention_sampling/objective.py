"""The classification of eq. 1 and the two training signals: backprop for f, REINFORCE for a.

Notation: an image's attention map a (h x w cells, summing to 1), P sampled cells i with attention a_i
and feature vectors f_i (C classes, unit length), label y.
"""
import numpy as np

from nn import softmax


def expected_logits(features, weights):
    """(M, P, C) features, (M, P) weights -> (M, C): sum_i a_i f_i / sum_i a_i  (eq. 1, before softmax)."""
    normalised = weights / weights.sum(axis=1, keepdims=True)
    return np.einsum("mp,mpc->mc", normalised, features)


def expected_logits_backward(grad_logits, weights):
    """(M, C) dL/dlogits, (M, P) weights -> (M, P, C) dL/df_i = a_i / sum a * dL/dlogits.

    The weights are constants for the feature network: the attention network learns by REINFORCE.
    """
    normalised = weights / weights.sum(axis=1, keepdims=True)
    return normalised[:, :, None] * grad_logits[:, None, :]


def patch_rewards(features, labels):
    """(M, P, C) features, (M,) labels -> (M, P) reward r_i = softmax(f_i)[y]: how much patch i alone
    supports the right class."""
    probabilities = softmax(features, axis=-1)
    return np.take_along_axis(probabilities, labels[:, None, None], axis=2)[:, :, 0]


def standardised_advantage(rewards, eps=1e-6):
    """(N, K) rewards of the K patches drawn for each image -> (N, K) (r - mean r) / (std r + eps).

    Subtracting the mean over the image's own draws (its replicas' patches together) is the baseline:
    it leaves the expected gradient unchanged but removes the part of the reward shared by all draws.
    Dividing by the std makes the step size independent of how spread the rewards are.
    """
    mean = rewards.mean(axis=1, keepdims=True)
    std = rewards.std(axis=1, keepdims=True)
    return (rewards - mean) / (std + eps)


def reinforce_gradient(advantage, cells, map_shape):
    """(N, K) advantages, (N, K, 2) sampled cells -> (N, h, w) gradient of the surrogate wrt log a.

    The expected reward R = E_{i ~ a}[r_i] has gradient E[r_i d log a_i] (the score-function identity
    d a_i = a_i d log a_i). Minimising the surrogate  -1/K sum_k adv_k log a_{i_k}  follows that
    gradient's Monte-Carlo estimate; its gradient wrt log a is -adv_k / K at each drawn cell, summed
    over repeated draws of the same cell.
    """
    n, k = advantage.shape
    grad = np.zeros((n,) + tuple(map_shape), dtype=advantage.dtype)
    rows = np.repeat(np.arange(n), k)
    np.add.at(grad, (rows, cells[..., 0].ravel(), cells[..., 1].ravel()), -advantage.ravel() / k)
    return grad


def attention_entropy(log_attention):
    """(N, h, w) log a -> (N,) H(a) = -sum a log a, in nats."""
    attention = np.exp(log_attention)
    return -np.sum(attention * log_attention, axis=(1, 2))


def entropy_gradient(log_attention):
    """(N, h, w) log a -> (N, h, w) dH/dlog a = -a (log a + 1), with log a taken as the variable.

    The log-softmax's backward then removes the constant part: dH/dlogits = -a (log a + H).
    """
    attention = np.exp(log_attention)
    return -attention * (log_attention + 1)
