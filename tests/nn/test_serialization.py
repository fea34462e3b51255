"""save_arrays / load_arrays: exact round trips, refusal of broken or foreign files, model checkpoints."""
import os
import pickle
import tempfile
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nn import Adam, BatchNorm2d, CheckpointError, Conv2d, Dense, GlobalAvgPool2d, LeakyReLU, Sequential
from nn import load_arrays, save_arrays
from tests.strategies import normal_array, seeds

DTYPES = [np.bool_, np.int8, np.uint8, np.int16, np.int32, np.int64, np.uint64,
          np.float16, np.float32, np.float64, np.complex64, np.complex128]

# Names np.savez(file, *args, allow_pickle=..., **kwds) would take for its own arguments.
SAVEZ_ARGUMENT_NAMES = ["file", "allow_pickle", "args", "kwds"]

names = st.one_of(
    st.sampled_from(SAVEZ_ARGUMENT_NAMES),
    st.lists(st.text("abcdefghijklmnopqrstuvwxyz0123456789_.", min_size=1, max_size=8), min_size=1,
             max_size=3).map("/".join),
)
arrays = st.sampled_from(DTYPES).flatmap(
    lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)))


def assert_identical(loaded, saved):
    """Same keys, and per key the same dtype, shape and bytes (so NaN payloads and -0.0 count too)."""
    assert sorted(loaded) == sorted(saved)
    for key, value in saved.items():
        value = np.asarray(value)
        assert loaded[key].dtype == value.dtype, key
        assert loaded[key].shape == value.shape, key
        assert loaded[key].tobytes() == value.tobytes(), key


@settings(max_examples=40)
@given(contents=st.dictionaries(names, arrays, min_size=0, max_size=4))
def test_round_trip_is_exact(contents):
    """load_arrays(save_arrays(d)) gives back every array bit for bit, with its dtype and shape (0-d, empty too)."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "checkpoint.npz")
        save_arrays(path, contents)
        assert_identical(load_arrays(path), contents)
        assert os.listdir(folder) == ["checkpoint.npz"], "temporary file left behind"


def test_save_replaces_an_existing_file():
    """Saving over a checkpoint replaces its contents entirely."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "checkpoint.npz")
        save_arrays(path, {"old": np.zeros(3)})
        save_arrays(path, {"new": np.ones(2)})
        assert_identical(load_arrays(path), {"new": np.ones(2)})


class _ExplodingArray:
    """Raises when numpy converts it: a crash in the middle of writing a checkpoint."""

    def __array__(self, dtype=None, copy=None):
        raise RuntimeError("disk on fire")


def test_crash_while_saving_keeps_the_old_file_and_leaves_no_temporary():
    """If writing fails, the previous checkpoint is untouched and no temporary file remains."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "checkpoint.npz")
        save_arrays(path, {"weight": np.arange(4.0)})
        with pytest.raises(RuntimeError, match="disk on fire"):
            save_arrays(path, {"weight": np.zeros(4), "broken": _ExplodingArray()})
        assert os.listdir(folder) == ["checkpoint.npz"]
        assert_identical(load_arrays(path), {"weight": np.arange(4.0)})


@settings(max_examples=30)
@given(contents=st.dictionaries(names, arrays, min_size=1, max_size=3), fraction=st.floats(0, 1, exclude_max=True))
def test_truncated_file_raises_checkpoint_error(contents, fraction):
    """Any strict prefix of a checkpoint (a crash mid-copy, a full disk) raises CheckpointError."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "checkpoint.npz")
        save_arrays(path, contents)
        with open(path, "rb") as handle:
            data = handle.read()
        with open(path, "wb") as handle:
            handle.write(data[: int(fraction * len(data))])
        with pytest.raises(CheckpointError):
            load_arrays(path)


def _write_text(path):
    with open(path, "w") as handle:
        handle.write("step,loss\n1,0.5\n")


def _write_random_bytes(path):
    with open(path, "wb") as handle:
        handle.write(np.random.default_rng(0).bytes(300))


def _write_pickle(path):
    with open(path, "wb") as handle:
        pickle.dump({"weight": np.ones(3)}, handle)


def _write_npy(path):
    with open(path, "wb") as handle:
        np.save(handle, np.ones(3))


def _write_zip_of_text(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not an array")


NOT_NPZ = [
    pytest.param(_write_text, id="text"),
    pytest.param(_write_random_bytes, id="random-bytes"),
    pytest.param(_write_pickle, id="pickle"),
    pytest.param(lambda path: open(path, "wb").close(), id="empty"),
    pytest.param(_write_npy, id="npy"),
    pytest.param(_write_zip_of_text, id="zip-of-text"),
]


@pytest.mark.parametrize("write", NOT_NPZ)
def test_file_that_is_not_npz_raises_checkpoint_error(write, tmp_path):
    """Text, random bytes, a pickle, an empty file, a bare .npy, a zip of text: all raise CheckpointError."""
    path = tmp_path / "checkpoint.npz"
    write(path)
    with pytest.raises(CheckpointError):
        load_arrays(path)


def test_missing_file_raises_checkpoint_error(tmp_path):
    """A path with no file behind it (or a folder) raises CheckpointError naming the path."""
    with pytest.raises(CheckpointError, match="missing.npz"):
        load_arrays(tmp_path / "missing.npz")
    with pytest.raises(CheckpointError):
        load_arrays(tmp_path)


class _LeavesAMark:
    """Unpickling this creates a file: proof that a loader ran pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_object_array_raises_checkpoint_error_without_unpickling(tmp_path):
    """An .npz holding an object array is refused, and its pickle is never run."""
    marker = tmp_path / "unpickled"
    path = tmp_path / "checkpoint.npz"
    np.savez(path, weight=np.ones(2), payload=np.array([_LeavesAMark(str(marker))], dtype=object))
    with pytest.raises(CheckpointError):
        load_arrays(path)
    assert not marker.exists(), "load_arrays unpickled the object array"


def test_pickle_file_is_never_unpickled(tmp_path):
    """A bare pickle whose loading has a side effect raises CheckpointError, and the side effect never happens."""
    marker = tmp_path / "unpickled"
    path = tmp_path / "checkpoint.npz"
    with open(path, "wb") as handle:
        pickle.dump(_LeavesAMark(str(marker)), handle)
    with pytest.raises(CheckpointError):
        load_arrays(path)
    assert not marker.exists(), "load_arrays unpickled the file"


def test_names_that_are_np_savez_arguments_round_trip(tmp_path):
    """'file' and 'allow_pickle' are array names like any other (np.savez(**arrays) raised or dropped them)."""
    path = tmp_path / "checkpoint.npz"
    contents = {name: np.arange(3.0) + i for i, name in enumerate(SAVEZ_ARGUMENT_NAMES)}
    save_arrays(path, contents)
    assert_identical(load_arrays(path), contents)


def test_saving_an_object_array_is_refused_and_leaves_no_file(tmp_path):
    """save_arrays never writes a pickle: an object array raises, and neither checkpoint nor temporary remains."""
    with pytest.raises(ValueError):
        save_arrays(tmp_path / "checkpoint.npz", {"payload": np.array([{"a": 1}], dtype=object)})
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- model checkpoints

def small_model(seed):
    """Parameters and buffers of several kinds: conv, batch-norm running statistics, dense."""
    return Sequential(Conv2d(2, 3, 3, rng=seed), BatchNorm2d(3), LeakyReLU(0.1), GlobalAvgPool2d(),
                      Dense(3, 2, rng=seed + 1))


def trained_state(seed):
    """A model whose every parameter and buffer has moved away from its initial value."""
    model = small_model(seed)
    rng = np.random.default_rng(seed)
    for value in model.params.values():
        value[...] = rng.standard_normal(value.shape)
    model.forward(normal_array(seed, (4, 5, 5, 2), dtype=np.float32), training=True)
    return model


@settings(max_examples=15)
@given(seed=seeds)
def test_model_state_round_trip_is_exact(seed):
    """state_dict -> save_arrays -> load_arrays -> load_state_dict reproduces every array and every output."""
    model = trained_state(seed)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.npz")
        save_arrays(path, model.state_dict())
        restored = small_model(seed + 7)
        restored.load_state_dict(load_arrays(path))
    assert_identical(restored.state_dict(), model.state_dict())
    x = normal_array(seed + 1, (2, 5, 5, 2), dtype=np.float32)
    np.testing.assert_array_equal(restored.forward(x, training=False), model.forward(x, training=False))


@settings(max_examples=10)
@given(seed=seeds)
def test_model_and_optimiser_checkpoint_resumes_identically(seed):
    """Saving model and Adam state together, then training on from the file, matches training on in memory."""
    model, optimiser = trained_state(seed), Adam(lr=0.01)
    x = normal_array(seed + 1, (3, 5, 5, 2), dtype=np.float32)

    def train_step(model, optimiser):
        model.backward(np.ones_like(model.forward(x, training=True)))
        optimiser.step(model.params, model.grads)

    train_step(model, optimiser)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "checkpoint.npz")
        save_arrays(path, {**{f"model/{k}": v for k, v in model.state_dict().items()},
                           **{f"optimiser/{k}": v for k, v in optimiser.state_dict().items()}})
        state = load_arrays(path)
    restored, restored_optimiser = small_model(seed + 7), Adam(lr=0.01)
    restored.load_state_dict({k[len("model/"):]: v for k, v in state.items() if k.startswith("model/")})
    restored_optimiser.load_state_dict({k[len("optimiser/"):]: v for k, v in state.items()
                                        if k.startswith("optimiser/")})
    for _ in range(2):
        train_step(model, optimiser)
        train_step(restored, restored_optimiser)
    assert_identical(restored.state_dict(), model.state_dict())


def _wrong_shape(state):
    state["params/0.weight"] = np.zeros((3, 3, 2, 4), dtype=np.float32)


def _missing_key(state):
    del state["buffers/1.running_var"]


def _unexpected_key(state):
    state["params/5.weight"] = np.zeros(2, dtype=np.float32)


def _renamed_key(state):
    state["params/4.kernel"] = state.pop("params/4.weight")


@pytest.mark.parametrize("corrupt", [_wrong_shape, _missing_key, _unexpected_key, _renamed_key])
def test_load_state_dict_rejects_mismatched_state(corrupt):
    """A state with a wrong shape, or a missing, extra or renamed key raises ValueError."""
    state = {k: v.copy() for k, v in trained_state(0).state_dict().items()}
    corrupt(state)
    with pytest.raises(ValueError):
        small_model(1).load_state_dict(state)


def test_rejected_state_leaves_the_model_untouched():
    """When load_state_dict raises, no array of the model has been overwritten."""
    state = {k: v.copy() for k, v in trained_state(0).state_dict().items()}
    state["params/4.weight"] = np.zeros((2, 3), dtype=np.float32)  # the last parameter: transposed shape
    model = small_model(1)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError):
        model.load_state_dict(state)
    assert_identical(model.state_dict(), before)
