"""Save and load dicts of arrays as .npz, atomically and without pickle."""
import os
import tempfile
import zipfile

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, or not one of ours."""


def save_arrays(path, arrays):
    """Write `arrays` (name -> array) to `path` so that a crash at any moment leaves the old file whole.

    The data goes to a temporary file in the same folder, is flushed to disk, then renamed over `path`:
    a rename within one file system is atomic.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **{k: np.asarray(v) for k, v in arrays.items()})
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def load_arrays(path):
    """Read a .npz written by `save_arrays` into a dict; never unpickles (object arrays are refused)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as error:
        raise CheckpointError(f"{path}: not a readable checkpoint ({error})") from None
