"""How many patches a fresh model puts on tissue, with and without the tissue mask, on whole slides.

    python -m experiments.tissue_share SLIDE... --out docs/results/tissue

For each slide and scale c: the share of the view's cells on tissue (application/tissue.py), the time the
mask takes, and the share of the patches on tissue over a few freshly drawn models (train.py's defaults,
untrained: what the first epochs see) with --tissue none and auto. Writes a Markdown table.
"""
import argparse
import os
import time

import numpy as np

from attention_sampling import AttentionSamplingModel, predict
from attention_sampling.application.settings import TRAINING_DEFAULTS
from attention_sampling.application.slides import load_slides
from attention_sampling.application.tissue import tissue_cells
from attention_sampling.training import on_mask


def measure(path, scale, models, looks, patches, size):
    """-> dict of the row for one slide at one scale."""
    batch = load_slides([path], scale=scale)
    try:
        view = batch.view(scale)[0]
        tissue_cells(view)  # scikit-image's first call imports and compiles: not the mask's cost
        started = time.perf_counter()
        mask = tissue_cells(view)[None]
        seconds = time.perf_counter() - started
        shares = {"none": [], "auto": []}
        for seed in range(models):
            model = AttentionSamplingModel(
                2, scale=scale, patch_size=size, n_patches=patches, seed=seed,
                **{key: TRAINING_DEFAULTS[key] for key in ("temperature", "border", "aggregate", "attention_padding")})
            for tissue, given in (("none", None), ("auto", mask)):
                prediction = predict(model, batch, np.random.default_rng(seed), looks=looks, mask=given)
                shares[tissue].append(on_mask(prediction.cells, mask))
    finally:
        batch.close()
    return {"slide": os.path.basename(path), "scale": scale, "view": f"{view.shape[0]}x{view.shape[1]}",
            "tissue_cells": float(mask.mean()), "mask_ms": seconds * 1e3,
            "none": float(np.mean(shares["none"])), "auto": float(np.mean(shares["auto"]))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slides", nargs="+")
    parser.add_argument("--scales", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--models", type=int, default=3, help="fresh models drawn per slide and scale (default 3)")
    parser.add_argument("--looks", type=int, default=16)
    parser.add_argument("--patches", type=int, default=8)
    parser.add_argument("--size", type=int, default=50)
    parser.add_argument("--out", help="folder to write tissue-share.md into (default: print only)")
    args = parser.parse_args(argv)
    lines = ["| slide | c | view | cells on tissue | mask (ms) | patches on tissue, --tissue none | auto |",
             "|---|---|---|---|---|---|---|"]
    for path in args.slides:
        for scale in args.scales:
            row = measure(path, scale, args.models, args.looks, args.patches, args.size)
            lines.append(f"| {row['slide']} | {row['scale']} | {row['view']} | {row['tissue_cells']:.1%} | "
                         f"{row['mask_ms']:.0f} | {row['none']:.1%} | {row['auto']:.1%} |")
            print(lines[-1], flush=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        note = (f"{args.models} fresh models (train.py's defaults, untrained) per slide and scale, {args.looks} looks "
                f"of {args.patches} patches of {args.size} pixels each; the mask's time is one call on a warm "
                "process.\n\n")
        with open(os.path.join(args.out, "tissue-share.md"), "w") as handle:
            handle.write("# Patches on tissue, with and without the tissue mask\n\n"
                         f"    python -m experiments.tissue_share {' '.join(args.slides)} --out {args.out}\n\n"
                         + note + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
