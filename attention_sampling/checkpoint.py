"""A training run's whole state in one .npz: model, Adam, random generator, epoch and metric history.

Written atomically by nn.save_arrays (temp file + rename), read back without pickle.
"""
import json

import numpy as np

import nn
from .errors import AttentionSamplingError

FORMAT = "attention-sampling-numpy/checkpoint/1"


def save_checkpoint(path, model, optimizer, rng, **meta):
    """Write model, Adam state, generator state and `meta` (epoch, config, history, ...: JSON-able)."""
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"adam/{k}": v for k, v in optimizer.state_dict().items()})
    meta = {"format": FORMAT, **meta, "rng": rng.bit_generator.state}
    # JSON in a unicode array: plain text, so loading it never needs pickle.
    arrays["meta"] = np.array(json.dumps(meta))
    nn.save_arrays(path, arrays)


def load_checkpoint(path):
    """-> dict(meta, model_state, adam_state); AttentionSamplingError for anything not ours."""
    try:
        arrays = nn.load_arrays(path)
    except nn.CheckpointError as error:
        raise AttentionSamplingError(str(error)) from None
    try:
        meta = json.loads(str(arrays["meta"]))
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
    except (KeyError, ValueError, TypeError) as error:
        raise AttentionSamplingError(f"{path}: not a checkpoint of this program ({error})") from None
    model_state = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    adam_state = {k[len("adam/"):]: v for k, v in arrays.items() if k.startswith("adam/")}
    return {"meta": meta, "model": model_state, "adam": adam_state}


def restore_rng(state):
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    return rng
