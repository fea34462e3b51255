"""A training run's whole state in one .npz: model, Adam, random generator, epoch and metric history (and the
running weight average, when the run keeps one).

Written atomically by nn.save_arrays (temp file + rename), read back without pickle.
"""
import json

import numpy as np

import nn
from .errors import AttentionSamplingError

FORMAT = "attention-sampling-numpy/checkpoint/1"
REQUIRED = {"config": dict, "epoch": int, "history": list, "rng": dict}


def save_checkpoint(path, model, optimizer, rng, average=None, **meta):
    """Write model, Adam state, generator state, the weight average (a model state dict, or None) and `meta`
    (epoch, config, history, ...: JSON-able)."""
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"adam/{k}": v for k, v in optimizer.state_dict().items()})
    arrays.update({f"average/{k}": v for k, v in (average or {}).items()})
    meta = {"format": FORMAT, **meta, "rng": rng.bit_generator.state}
    # JSON in a unicode array: plain text, so loading it never needs pickle.
    arrays["meta"] = np.array(json.dumps(meta))
    nn.save_arrays(path, arrays)


def load_checkpoint(path):
    """-> dict(meta, model, adam, average: state dicts, average empty if none); AttentionSamplingError for
    anything not ours."""
    try:
        arrays = nn.load_arrays(path)
    except nn.CheckpointError as error:
        raise AttentionSamplingError(str(error)) from None
    try:
        meta = json.loads(str(arrays["meta"]))
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format') if isinstance(meta, dict) else None!r}, "
                             f"not {FORMAT!r}")
        # What resume and evaluate read without further checks: a field missing here would be a traceback there.
        for key, kind in REQUIRED.items():
            if not isinstance(meta.get(key), kind):
                raise ValueError(f"its meta data lacks {key!r}")
    except KeyError:
        raise AttentionSamplingError(f"{path}: not a checkpoint of this program (no meta data)") from None
    except (ValueError, TypeError) as error:
        raise AttentionSamplingError(f"{path}: not a checkpoint of this program ({error})") from None
    model_state = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    adam_state = {k[len("adam/"):]: v for k, v in arrays.items() if k.startswith("adam/")}
    average = {k[len("average/"):]: v for k, v in arrays.items() if k.startswith("average/")}
    return {"meta": meta, "model": model_state, "adam": adam_state, "average": average}


def restore_rng(state, path="checkpoint"):
    rng = np.random.default_rng()
    try:
        rng.bit_generator.state = state
    except (KeyError, TypeError, ValueError) as error:
        raise AttentionSamplingError(f"{path}: unusable random-generator state ({error})") from None
    return rng
