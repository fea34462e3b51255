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
            # The .npz layout written member by member: np.savez(**arrays) would take a key named
            # 'file' or 'allow_pickle' for its own argument, and here object arrays are refused outright.
            with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as archive:
                for name, value in arrays.items():
                    with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)
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
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a bare .npy array, or text np.load parsed
            raise ValueError("not an .npz archive")
        with loaded as archive:
            arrays = {key: archive[key] for key in archive.files}
    except Exception as error:
        # Whatever the file is, the caller needs one answer: BadZipFile, a pickle refused (ValueError),
        # zlib.error for a damaged member, NotImplementedError or RuntimeError for a compressed or
        # encrypted zip of another program, MemoryError for a header declaring a huge array.
        message = " ".join(str(error).split())  # one line, whatever the library put in it
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(error).__name__}: {message})") from None
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray):  # NpzFile hands back raw bytes for a member that is not .npy
            raise CheckpointError(f"{path}: not a readable checkpoint (member {key!r} is not an array)")
    return arrays
