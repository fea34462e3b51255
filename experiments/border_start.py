"""Where a freshly drawn attention network puts its weight on flat views with a few blobs, by padding.

    python -m experiments.border_start --out docs/results/border
    python -m experiments.border_start --symmetry flips     # the network with mirror-symmetric kernels

For each padding of the attention network's convolutions, seed and view size: the share of the attention on
the outer ring of cells (against the ring's share of the map, its uniform share) and on the blobs' cells
(against theirs). The ring's ratio shows the border artefact; the blobs' ratio, the random start's eye for
salient spots.
"""
import argparse
import os

import numpy as np

from attention_sampling.models import ATTENTION_PADDINGS, ATTENTION_SYMMETRIES, AttentionNetwork


def flat_views(n, height, width, n_blobs, blob, noise, rng):
    """(n, height, width, 3) float32 grey views with small noise and `n_blobs` bright squares of side `blob`
    placed beyond the reach of the three 3x3 convolutions from the ring (4 cells), and the (n, height, width) mask of the blobs' cells."""
    views = 0.5 + noise * rng.standard_normal((n, height, width, 1)).astype(np.float32)
    views = np.repeat(views, 3, axis=3)
    mask = np.zeros((n, height, width), dtype=bool)
    for i in range(n):
        for _ in range(n_blobs):
            top = rng.integers(4, height - blob - 3)
            left = rng.integers(4, width - blob - 3)
            views[i, top:top + blob, left:left + blob] = 0.9
            mask[i, top:top + blob, left:left + blob] = True
    return views, mask


def ring_mask(height, width):
    ring = np.zeros((height, width), dtype=bool)
    ring[[0, -1], :] = ring[:, [0, -1]] = True
    return ring


def measure(padding, seed, height, width, n_blobs=3, blob=3, noise=0.02, batch=8, symmetry="none"):
    """-> (ring share / ring's uniform share, blob share / blobs' uniform share), medians over the batch."""
    rng = np.random.default_rng(1000 + seed)
    views, blobs = flat_views(batch, height, width, n_blobs, blob, noise, rng)
    network = AttentionNetwork(1, rng=np.random.default_rng(seed), padding=padding, symmetry=symmetry)
    attention = np.exp(network.forward_view(views, training=True).astype(np.float64))
    ring = ring_mask(height, width)
    ring_ratio = attention[:, ring].sum(axis=1) / ring.mean()
    blob_ratio = (attention * blobs).sum(axis=(1, 2)) / blobs.mean(axis=(1, 2))
    return float(np.median(ring_ratio)), float(np.median(blob_ratio))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/results/border")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--noise", type=float, default=0.02, help="standard deviation of the views' noise")
    parser.add_argument("--symmetry", choices=ATTENTION_SYMMETRIES, default="none",
                        help="the network's kernels (models.AttentionNetwork)")
    args = parser.parse_args(argv)
    sizes = [(16, 16), (24, 32), (48, 64), (96, 128)]
    lines = ["| padding | view | ring share / uniform: median (max) | blob share / uniform: median (min) |",
             "|---|---|---|---|"]
    for padding in ATTENTION_PADDINGS:
        for height, width in sizes:
            rows = np.array([measure(padding, seed, height, width, noise=args.noise, symmetry=args.symmetry)
                             for seed in range(args.seeds)])
            lines.append(f"| {padding} | {height}x{width} | {np.median(rows[:, 0]):.2f} ({rows[:, 0].max():.2f}) | "
                         f"{np.median(rows[:, 1]):.2f} ({rows[:, 1].min():.2f}) |")
    table = "\n".join(lines)
    print(table)
    os.makedirs(args.out, exist_ok=True)
    flips = args.symmetry != "none"
    name = f"start-noise{args.noise}" + (f"-{args.symmetry}" if flips else "") + ".md"
    with open(os.path.join(args.out, name), "w") as handle:
        handle.write(f"A fresh attention network{' with mirror-symmetric kernels' if flips else ''} ({args.seeds} "
                     f"seeds, 8 views each, 3 blobs of 3x3 cells at 0.9 on 0.5 grey with noise {args.noise}): "
                     f"`python -m experiments.border_start --noise {args.noise}"
                     f"{' --symmetry ' + args.symmetry if flips else ''}`\n\n"
                     + table + "\n")


if __name__ == "__main__":
    main()
