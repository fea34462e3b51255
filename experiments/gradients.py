"""How good is each estimator's gradient? Bias, variance, cosine and signal-to-noise against the exact one.

    python -m experiments gradients --out docs/results/gradients

A fixed problem: one image's attention logits z on an 8 x 8 map (normal, seeded), a feature vector f_k of
unit length for every cell (random directions, but for a few informative cells that point at the true
class), the true class y and the classifier temperature T. Each estimator is the project's own code
(objective.py, as train_step calls it: `replicas` looks of P patches, REINFORCE's advantage standardised
over all of them), run on many independent draws; its gradient with respect to the logits is compared with
the exact gradient of the objective it stands for:

  REINFORCE     loss -R(a), R = sum_k a_k r_k with r_k = softmax(T f_k)[y]:   dL/dz = -a (r - R)
  expectation   loss CE(softmax(T sum_k a_k f_k), y):                        dL/dz = a (h - sum_j a_j h_j),
                with h_k = T g . f_k and g = softmax(T E_a f) - onehot(y); as train_step computes it (each
                look's baseline the other looks' estimate of E_a[f]) and, for comparison, without a baseline

Per setting: the cosine between the mean estimate and the exact gradient (1: no bias in direction), the
mean's norm relative to the exact one (the standardised advantage rescales REINFORCE), the mean cosine of a
single estimate with the exact gradient (what one step sees), and the signal-to-noise ratio |mean| /
sqrt(E|estimate - mean|^2).
"""
import csv
import os

import numpy as np

from nn import softmax

from attention_sampling.objective import (estimator_weights, expectation_backward, expectation_baseline, patch_rewards,
                         reinforce_gradient, scatter_to_cells, standardised_advantage)
from attention_sampling.sampling import sample_cells

ESTIMATORS = ("reinforce", "expectation, no baseline", "expectation")
COLUMNS = ("estimator", "sampling", "patches", "replicas", "trials", "cosine_of_mean", "relative_norm_of_mean",
           "mean_cosine", "snr")


def make_problem(seed=0, side=8, classes=3, informative=6, temperature=3.0, alike=0.0):
    """-> dict(logits (h, w), features (h, w, C), label, temperature): the fixed problem described above.

    alike > 0 adds alike times one random unit direction to every feature vector before normalising: the
    patches look alike, as they do to a feature network that has not learnt yet."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((side, side))
    features = rng.standard_normal((side, side, classes))
    label = 0
    cells = rng.choice(side * side, informative, replace=False)
    features.reshape(-1, classes)[cells] = np.eye(classes)[label] * 3 + 0.3 * rng.standard_normal((informative, classes))
    if alike:
        shared = rng.standard_normal(classes)
        features += alike * shared / np.linalg.norm(shared)
    features /= np.linalg.norm(features, axis=-1, keepdims=True)
    return {"logits": logits, "features": features, "label": label, "temperature": temperature}


def attention_of(logits):
    attention = np.exp(logits - logits.max())
    return attention / attention.sum()


def to_logits(grad_log_attention, attention):
    """(..., h, w) dL/dlog a -> dL/dz through the log-softmax: g - a sum(g)."""
    return grad_log_attention - attention * grad_log_attention.sum(axis=(-2, -1), keepdims=True)


def exact_gradient(problem, estimator):
    """(h, w) dL/dz of the objective each estimator stands for (module docstring)."""
    a = attention_of(problem["logits"])
    f, y, t = problem["features"], problem["label"], problem["temperature"]
    if estimator == "reinforce":
        r = patch_rewards(f.reshape(1, -1, f.shape[-1]), np.array([y]), t).reshape(a.shape)
        return -a * (r - np.sum(a * r))
    expected = np.einsum("hw,hwc->c", a, f)
    g = softmax(t * expected, axis=-1) - np.eye(f.shape[-1])[y]
    h = t * np.einsum("c,hwc->hw", g, f)
    return a * (h - np.sum(a * h))


def estimates(problem, estimator, replace, patches, replicas, trials, rng):
    """(trials, h, w) independent estimates of dL/dz, each one image's gradient as train_step computes it."""
    a = attention_of(problem["logits"])
    f, t = problem["features"], problem["temperature"]
    side_h, side_w, classes = f.shape
    maps = np.broadcast_to(a, (trials * replicas, side_h, side_w))
    cells = sample_cells(np.ascontiguousarray(maps), patches, rng, replace=replace)   # (trials R, P, 2)
    values = a[cells[..., 0], cells[..., 1]]                                         # (trials R, P)
    sampled_features = f[cells[..., 0], cells[..., 1]]                               # (trials R, P, C)
    labels = np.full(trials * replicas, problem["label"])
    draw_weights = estimator_weights(values, replace)
    all_cells = cells.reshape(trials, replicas * patches, 2)
    if estimator == "reinforce":
        rewards = patch_rewards(sampled_features, labels, t).reshape(trials, replicas * patches)
        weights = None if replace else (patches * draw_weights).reshape(trials, -1)
        grad = reinforce_gradient(standardised_advantage(rewards), all_cells, (side_h, side_w), weights)
    else:
        logits = t * np.einsum("mp,mpc->mc", draw_weights, sampled_features)
        probabilities = softmax(logits, axis=-1)
        # The cross-entropy's mean over the image's looks, as train_step's loss is a mean over looks.
        grad_logits = (probabilities - np.eye(classes)[labels]) / replicas
        baseline = None if estimator.endswith("no baseline") else \
            expectation_baseline(sampled_features, draw_weights, replicas)
        _, per_draw = expectation_backward(grad_logits, sampled_features, draw_weights, t, baseline)
        grad = scatter_to_cells(per_draw.reshape(trials, -1), all_cells, (side_h, side_w))
    return to_logits(grad, a)


def statistics(samples, exact):
    """(trials, h, w) estimates, (h, w) exact -> the table's four numbers."""
    flat = samples.reshape(len(samples), -1)
    target = exact.ravel()
    mean = flat.mean(axis=0)
    norm_target = np.linalg.norm(target)

    def cosine(u, v):
        return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-30))

    single = flat @ target / (np.linalg.norm(flat, axis=1) * norm_target + 1e-30)
    noise = np.sqrt(np.mean(np.sum((flat - mean) ** 2, axis=1)))
    return {"cosine_of_mean": cosine(mean, target), "relative_norm_of_mean": float(np.linalg.norm(mean) / norm_target),
            "mean_cosine": float(single.mean()), "snr": float(np.linalg.norm(mean) / (noise + 1e-30))}


def gradient_table(problem, patch_counts=(1, 5, 20), replicas=4, trials=20000, seed=0):
    """-> rows (dicts with COLUMNS) for each estimator x sampling x P."""
    rows = []
    for estimator in ESTIMATORS:
        exact = exact_gradient(problem, estimator)
        for sampling in ("with", "without"):
            for patches in patch_counts:
                rng = np.random.default_rng([seed, patches, sampling == "with", ESTIMATORS.index(estimator)])
                samples = estimates(problem, estimator, sampling == "with", patches, replicas, trials, rng)
                rows.append({"estimator": estimator, "sampling": sampling, "patches": patches, "replicas": replicas,
                             "trials": trials, **statistics(samples, exact)})
    return rows


def write_results(rows, out):
    """results CSV, a Markdown table and a figure (when matplotlib is there) -> paths written."""
    os.makedirs(out, exist_ok=True)
    csv_path = os.path.join(out, "gradients.csv")
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: (round(value, 4) if isinstance(value, float) else value) for key, value in row.items()})
    lines = ["| estimator | sampling | P | cosine of the mean to the exact gradient | norm of the mean / exact "
             "| mean cosine of one estimate | signal-to-noise |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['estimator']} | {row['sampling']} | {row['patches']} | {row['cosine_of_mean']:.3f} | "
                     f"{row['relative_norm_of_mean']:.3f} | {row['mean_cosine']:.3f} | {row['snr']:.3f} |")
    table_path = os.path.join(out, "gradients.md")
    with open(table_path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    written = [csv_path, table_path]
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return written
    figure = Figure(figsize=(10, 3.6), layout="constrained")
    panels = figure.subplots(1, 3)
    for axes, key, title in zip(panels, ("cosine_of_mean", "mean_cosine", "snr"),
                                ("cosine(mean estimate, exact)", "mean cosine of one estimate", "signal-to-noise")):
        for estimator, style in zip(ESTIMATORS, ("-", ":", "--")):
            for sampling in ("with", "without"):
                chosen = [r for r in rows if r["estimator"] == estimator and r["sampling"] == sampling]
                axes.plot([r["patches"] for r in chosen], [r[key] for r in chosen], marker="o", linestyle=style,
                          label=f"{estimator}, {sampling}")
        axes.set_xscale("log")
        axes.set_xlabel("patches P per look")
        axes.set_title(title, fontsize=10)
        axes.grid(alpha=0.3)
    panels[0].legend(fontsize=8)
    figure_path = os.path.join(out, "gradients.png")
    figure.savefig(figure_path, dpi=100)
    return written + [figure_path]
