"""The classification of eq. 1 and the two training signals: backprop for f, REINFORCE for a.

Notation: an image's attention map a (h x w cells, summing to 1), P sampled cells i with attention a_i
and feature vectors f_i (C classes, unit length), label y.
"""
import numpy as np

from nn import softmax


def expected_logits(features, weights, temperature=1.0):
    """(M, P, C) features, (M, P) weights -> (M, C): T sum_i a_i f_i / sum_i a_i  (eq. 1, before softmax).

    The temperature T scales the logits. With unit-length f and T = 1 the logits are a vector of length
    at most 1, so with C = 3 classes softmax can never give the right class more than ~0.63 (the best
    case is f = (2, -1, -1) / sqrt(6)): the cross-entropy never saturates, and its gradient never fades
    even on images already classified right. The paper's reference implementation uses T = 3 (up to 0.95).
    """
    normalised = weights / weights.sum(axis=1, keepdims=True)
    return temperature * np.einsum("mp,mpc->mc", normalised, features)


def expected_logits_backward(grad_logits, weights, temperature=1.0):
    """(M, C) dL/dlogits, (M, P) weights -> (M, P, C) dL/df_i = T a_i / sum a * dL/dlogits.

    The weights are constants for the feature network: the attention network learns by REINFORCE.
    """
    normalised = weights / weights.sum(axis=1, keepdims=True)
    return temperature * normalised[:, :, None] * grad_logits[:, None, :]


def patch_rewards(features, labels, temperature=1.0):
    """(M, P, C) features, (M,) labels -> (M, P) reward r_i = softmax(T f_i)[y]: how much patch i alone
    supports the right class, under the same classifier temperature as eq. 1."""
    probabilities = softmax(temperature * features, axis=-1)
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


def reinforce_gradient(advantage, cells, map_shape, draw_weights=None):
    """(N, K) advantages, (N, K, 2) sampled cells -> (N, h, w) gradient of the surrogate wrt log a.

    The expected reward R = E_{i ~ a}[r_i] has gradient E[r_i d log a_i] (the score-function identity
    d a_i = a_i d log a_i). Minimising the surrogate  -1/K sum_k adv_k log a_{i_k}  follows that
    gradient's Monte-Carlo estimate; its gradient wrt log a is -adv_k / K at each drawn cell, summed
    over repeated draws of the same cell.

    `draw_weights` (N, K), P times the estimator weights of each draw within its look of P draws
    (all ones with replacement), make the average unbiased for draws without replacement.
    """
    scaled = advantage if draw_weights is None else advantage * draw_weights
    return scatter_to_cells(-scaled / advantage.shape[1], cells, map_shape)


def look_rewards(logits, labels):
    """(M, C) logits of M looks, (M,) labels -> (M,) reward of each look: its probability of the true class."""
    return np.take_along_axis(softmax(logits, axis=-1), labels[:, None], axis=1)[:, 0]


def look_reinforce_gradient(advantage, cells, sampled_values, map_shape, replace=True):
    """(N, R) advantages of R looks per image, (N, R P, 2) their cells (looks adjacent, draws in order),
    (N R, P) the sampled probabilities a_i of those draws -> (N, h, w) gradient wrt log a of the surrogate
    -1/R sum_r adv_r log q(look_r): REINFORCE with the whole look as the action and its reward.

    Per-patch rewards (reinforce_gradient) are maximised by one cell, the patch that best shows the class
    alone; a look's reward is what its P patches show together, so a look that holds more of the evidence
    (three digits of the class, not one) scores higher (docs/experiments/megapixel-mnist.md).

    With replacement log q = sum_m log a_{i_m}. Without, draw m comes from a renormalised over the cells not
    yet drawn: log q = sum_m [log a_{i_m} - log(1 - S_m)], S_m = sum_{j<m} a_{i_j}, and each earlier draw j
    gets a_{i_j} / (1 - S_m) from every later m. The remaining mass 1 - S_m is at least a_{i_m} (that cell
    is in it), the bound that keeps it finite where float32 rounds a peaked attention's 1 - S_m to 0.
    """
    n, looks = advantage.shape
    p = sampled_values.shape[1]
    coefficients = np.ones(sampled_values.shape, dtype=np.float64)
    if not replace:
        values = sampled_values.astype(np.float64)
        remaining = np.maximum(1 - (np.cumsum(values, axis=1) - values), values)
        # sum over later draws m > j of 1 / (1 - S_m): a reversed cumulative sum, shifted by one.
        later = np.cumsum((1 / remaining)[:, ::-1], axis=1)[:, ::-1] - 1 / remaining
        coefficients += values * later
    per_draw = -advantage[:, :, None] * coefficients.reshape(n, looks, p) / looks
    return scatter_to_cells(per_draw.reshape(n, looks * p).astype(advantage.dtype), cells, map_shape)


def attention_entropy(log_attention):
    """(N, h, w) log a -> (N,) H(a) = -sum a log a, in nats (0 log 0 = 0 on masked cells, log a = -inf)."""
    attention = np.exp(log_attention)
    return -np.sum(attention * _finite(log_attention), axis=(1, 2))


def entropy_gradient(log_attention):
    """(N, h, w) log a -> (N, h, w) dH/dlog a = -a (log a + 1), with log a taken as the variable (0 on masked
    cells, log a = -inf: their a is the constant 0).

    The log-softmax's backward then removes the constant part: dH/dlogits = -a (log a + H).
    """
    attention = np.exp(log_attention)
    return -attention * (_finite(log_attention) + 1)


def _finite(log_attention):
    """(N, h, w) log a with the masked cells' -inf read as 0 (where a = 0 multiplies it); the array itself
    when no cell is masked."""
    if np.all(log_attention > -np.inf):
        return log_attention
    return np.where(log_attention > -np.inf, log_attention, 0).astype(log_attention.dtype)


# ----------------------------------------------------------------------------------------------------
# The expectation estimator (Katharopoulos & Fleuret, 2019): the model is E_{i ~ a}[f_i], estimated from
# the sampled patches and differentiated directly; no reward. Its attention gradient gets a baseline made
# of the image's other looks (expectation_baseline), as REINFORCE's rewards get theirs.


def estimator_weights(attention_values, replace=True):
    """(M, P) attention a of the P cells drawn for each look -> (M, P) weights w with E[sum_m w_m v_{i_m}]
    = sum_k a_k v_k for any per-cell values v: the unbiased estimate of an expectation over a.

    With replacement the draws are i.i.d. from a, so w_m = 1 / P.

    Without replacement, draw m (0-based) comes from a renormalised over the cells not yet drawn, whose
    remaining mass is 1 - S_m with S_m = sum_{j<m} a_{i_j}. For each m,
        sum_{j<m} a_{i_j} v_{i_j} + (1 - S_m) v_{i_m}
    is unbiased (the known part exactly, the rest by importance), and so is their mean over m. Collecting
    the coefficient of each v_{i_m}: w_m = ((1 - S_m) + (P - 1 - m) a_{i_m}) / P.
    """
    m, p = attention_values.shape
    if replace:
        return np.full((m, p), 1.0 / p, dtype=attention_values.dtype)
    drawn_before = np.cumsum(attention_values, axis=1) - attention_values
    later_draws = (p - 1 - np.arange(p)).astype(attention_values.dtype)
    return ((1 - drawn_before) + later_draws * attention_values) / p


def expectation_logits(features, weights, temperature=1.0):
    """(M, P, C) features, (M, P) estimator weights -> (M, C) estimate of T E_{i ~ a}[f_i]."""
    return temperature * np.einsum("mp,mpc->mc", weights, features)


def expectation_backward(grad_logits, features, weights, temperature=1.0, baseline=None):
    """Gradients of the loss through the estimate: -> (dL/df (M, P, C), dL/dlog a_i (M, P)).

    dL/df_m = T w_m g. For the attention, d E_a[f] = sum_k f_k d a_k = sum_k a_k (f_k d log a_k): again an
    expectation over a, of f_k d log a_k, so the same weights estimate it without bias:
        dL/dlog a_{i_m} = T w_m (g . (f_m - b))
    with g = dL/dlogits, the weights held constant and b the (M, C) `baseline` of each look (0 if None).
    Any b that does not depend on the look's own draws leaves the estimate unbiased: sum_k a_k d log a_k =
    d sum_k a_k = 0, so E[sum_m w_m b d log a_{i_m}] = 0. Without it, the part g . E[f] that all draws
    share pushes up whichever cells happened to be drawn, most often the likeliest: a random walk that
    the softmax turns into a collapse (README, "Beyond the paper").
    """
    grad_logits = temperature * grad_logits
    grad_features = weights[:, :, None] * grad_logits[:, None, :]
    centred = features if baseline is None else features - baseline[:, None, :]
    grad_log_attention = weights * np.einsum("mc,mpc->mp", grad_logits, centred)
    return grad_features, grad_log_attention


def expectation_baseline(features, weights, replicas):
    """(N R, P, C) features of R looks per image (looks of one image adjacent), (N R, P) estimator weights ->
    (N R, C) baseline of each look: the mean of the image's other R - 1 looks' estimates sum_m w_m f_m.

    The looks are independent draws, so each look's baseline is independent of its own draws (unbiased,
    expectation_backward) while estimating the same E_a[f]: f_m - b is then how much patch m differs from
    the image's average patch, the counterpart of REINFORCE's r - mean r. With R = 1 there is no other
    look: the baseline is 0, the estimator without one.
    """
    m, _, c = features.shape
    estimates = expectation_logits(features, weights).reshape(-1, replicas, c)
    if replicas == 1:
        return np.zeros((m, c), dtype=features.dtype)
    others = (estimates.sum(axis=1, keepdims=True) - estimates) / (replicas - 1)
    return others.reshape(m, c).astype(features.dtype)


def floored_attention(log_attention, floor):
    """(N, h, w) log a -> (N, h, w) log a_s of the sampling distribution a_s = (1 - eps) a + eps / K.

    K = h w cells, 0 <= eps < 1; with masked cells (log a = -inf) K counts each image's other cells and
    the masked ones stay at a_s = 0, so the floor never puts a patch where the mask forbids it. The uniform floor eps keeps every cell drawn with probability at least eps / K, so a
    collapsed attention still sees other cells and can get a reward signal from them (the paper's
    library mixes in such a floor when sampling). All estimators then work with a_s, the distribution
    actually sampled: its log-probabilities score REINFORCE and its values weight eq. 1.
    """
    if floor == 0:
        return log_attention
    allowed = log_attention > -np.inf
    masked = not allowed.all()
    cells = allowed.sum(axis=(1, 2), keepdims=True) if masked else log_attention.shape[1] * log_attention.shape[2]
    # log((1 - eps) a + eps / K) = logaddexp(log(1 - eps) + log a, log eps - log K), exact for tiny a too, and
    # for an eps so small that eps / K would underflow to 0.
    mixed = np.logaddexp(np.log1p(-floor) + log_attention, np.log(floor) - np.log(cells)).astype(log_attention.dtype)
    return np.where(allowed, mixed, mixed.dtype.type(-np.inf)) if masked else mixed


def floored_attention_backward(grad_log_sampled, log_attention, log_sampled, floor):
    """(N, h, w) dL/dlog a_s -> (N, h, w) dL/dlog a, back through the mixing.

    a_s,k depends on a_k alone: d log a_s,k / d log a_k = (1 - eps) a_k / a_s,k, so
        dL/dlog a_k = dL/dlog a_s,k (1 - eps) exp(log a_k - log a_s,k).
    """
    if floor == 0:
        return grad_log_sampled
    allowed = log_sampled > -np.inf
    if not allowed.all():  # a masked cell is 0 under both: no gradient (and -inf - -inf would be NaN)
        return np.where(allowed, grad_log_sampled * (1 - floor) * np.exp(np.where(allowed, log_attention - log_sampled, 0)),
                        0).astype(grad_log_sampled.dtype)
    return grad_log_sampled * (1 - floor) * np.exp(log_attention - log_sampled)


def scatter_to_cells(values, cells, map_shape):
    """(N, K) per-draw values, (N, K, 2) cells -> (N, h, w) sums per cell (repeated draws add up)."""
    n, k = values.shape
    h, w = map_shape
    flat = np.bincount((np.arange(n)[:, None] * (h * w) + cells[..., 0] * w + cells[..., 1]).ravel(),
                       weights=values.ravel(), minlength=n * h * w)
    return flat.reshape(n, h, w).astype(values.dtype)
