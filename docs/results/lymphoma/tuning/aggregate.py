"""A trained run's validation and test accuracy when its classifier weights the sampled features by eq. 1
(a_i / sum a) or takes their plain mean (1 / P), over the same draws (4 looks of P patches per image, seed
123), and the accuracy of each patch alone (argmax of f_i). Usage: python aggregate.py RUN [best|last]
(from the project root)."""
import os
import sys

import numpy as np

sys.path.insert(0, os.getcwd())
from attention_sampling.application.prediction import load_run
from attention_sampling.application.data import run_split, load_batch, ImageFolder
import nn
from attention_sampling import training
from attention_sampling.objective import expected_logits, expectation_logits, estimator_weights

run, which = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "best"
config, model, epoch, _ = load_run(run, which)
ds = ImageFolder.scan(config["data"])
split = run_split(ds.labels, config)
looks = 4
for name in ("val", "test"):
    idx = getattr(split, name)
    acc = {"eq1": [], "mean": [], "single": []}
    rng = np.random.default_rng(123)
    for s in range(0, len(idx), 8):
        b = idx[s:s+8]
        images = load_batch(ds, b, tuple(config["image_shape"]), scale=model.scale)
        sampled = training.look(model, images, rng, looks, training=False)
        n, p = len(b), model.n_patches
        patches = sampled.patches.reshape((n * looks, p) + sampled.patches.shape[2:])
        w = sampled.weights.reshape(n * looks, p)
        f = training.patch_features(model, patches, training=False)
        y = ds.labels[b]
        for key, logits in (("eq1", expected_logits(f, w, model.temperature)),
                            ("mean", expectation_logits(f, estimator_weights(w, True), model.temperature))):
            pr = nn.softmax(logits, axis=-1).reshape(n, looks, -1)
            acc[key].append(pr.argmax(-1) == y[:, None])
        acc["single"].append((f.argmax(-1).reshape(n, looks, p) == y[:, None, None]).mean(-1))
    print(f"{run} {which} epoch {epoch} {name}: " + ", ".join(
        f"{k} {np.concatenate(v).mean():.3f}" for k, v in acc.items()))
