"""Folders nobody cleaned, flags nobody checked, and a machine that fails: one test per case of
docs/robustness.md.

A bad input must end the program with one line on stderr that names the file or flag, exit code 2, no
traceback, and nothing lost on disk. Most tests call train.main / evaluate.main in-process (an exception
other than SystemExit would fail the test, so "no traceback" is checked by the call itself); the kill -9
and Ctrl-C tests run the real train.py as a subprocess.
"""
import errno
import json
import csv
import os
import pickle
import random
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

import evaluate
import nn
import train
from attention_sampling.application import trainer as trainer_module
from attention_sampling.application.checkpoint import FORMAT, load_checkpoint
from attention_sampling.application.data import read_image
from attention_sampling.application.embedded import ensure_default_dataset
from attention_sampling.application.errors import AttentionSamplingError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "train.py")
# 12 images of 48x64 (3 classes): 9 train / 3 test, 5 steps of 2 images per epoch.
TINY = ["--patches", "2", "--size", "8", "--scale", "4", "--batch-size", "2", "--replicas", "1", "--quiet"]
KILL_EPOCHS = 6


# ----------------------------------------------------------------------------- helpers

def generate(root):
    return ensure_default_dataset(str(root), n_per_class=4, height=48, width=64, spot_size=6, n_spots=2,
                                  n_distractors=1)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def data(tiny_data, tmp_path):
    """A copy of the tiny data set that the test may spoil."""
    return shutil.copytree(tiny_data, tmp_path / "data")


def call(main, argv, capsys):
    """Run a command line's main in-process -> (exit code, stderr lines)."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse
        code = exit_.code
    return code, capsys.readouterr().err.strip().splitlines()


def one_line_error(code, lines, *names, script="train.py"):
    """Exit 2 with one error line, the last, naming every one of `names` (progress lines and warnings may
    come before it)."""
    assert code == 2, f"exit {code}: {lines}"
    errors = [line for line in lines if line.startswith(f"{script}: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], lines
    for name in names:
        assert str(name) in errors[0], f"{name!r} not in {errors[0]!r}"
    assert not any("Traceback" in line for line in lines)
    return errors[0]


def warnings_of(lines):
    return [line for line in lines if line.startswith("train.py: warning: ")]


@pytest.fixture(scope="module")
def one_epoch_run(tiny_data, tmp_path_factory):
    """A finished 1-epoch run, made in-process; tests change copies of it."""
    folder = tmp_path_factory.mktemp("one-epoch") / "run"
    assert train.main(["--data", tiny_data, "--out", str(folder), "--epochs", "1", *TINY]) == 0
    return folder


@pytest.fixture
def run_copy(one_epoch_run, tmp_path):
    return shutil.copytree(one_epoch_run, tmp_path / "run")


def file_bytes(folder):
    return {name: (folder / name).read_bytes() for name in ("checkpoint.npz", "best.npz", "metrics.csv")}


def temporaries(folder):
    return [name for name in os.listdir(folder) if name.startswith(".tmp-")]


def png_chunk(kind, payload):
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bomb(width=100_000, height=100_000):
    """A 100-byte PNG whose header declares width x height RGB pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + png_chunk(b"IEND", b""))


def tiff_bomb(width=100_000, height=100_000):
    """A little-endian TIFF whose one strip claims width x height 8-bit grey pixels."""
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 8),
               (277, 3, 1), (278, 4, height), (279, 4, 16)]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        ifd += struct.pack("<HHII", tag, kind, 1, value) if kind == 4 else struct.pack("<HHIHH", tag, kind, 1, value, 0)
    return b"II*\0" + struct.pack("<I", 24) + b"\0" * 16 + ifd + struct.pack("<I", 0)


def bmp_bomb(width=100_000, height=100_000):
    header = struct.pack("<2sIHHI", b"BM", 70, 0, 0, 54)
    header += struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return header + b"\0" * 16


# ----------------------------------------------------------------------------- bad image files

def spoil(data):
    """Put a truncated PNG, a corrupt JPEG, a text file named .png, a zero-byte TIFF and a float TIFF with
    NaN into the class folders -> their paths."""
    good = (data / "horizontal" / "0000.png").read_bytes()
    bad = {"horizontal/truncated.png": good[: len(good) // 2],
           "vertical/notes.png": b"minutes of the meeting, not an image\n",
           "vertical/empty.tif": b""}
    for name, content in bad.items():
        (data / name).write_bytes(content)
    jpeg = data / "checkerboard" / "corrupt.jpg"
    iio.imwrite(jpeg, np.zeros((48, 64, 3), np.uint8))
    jpeg.write_bytes(jpeg.read_bytes()[:200])  # the header, then nothing: "image file is truncated"
    iio.imwrite(data / "checkerboard" / "nan.tif", np.full((48, 64), np.nan, np.float32))
    return [data / name for name in bad] + [jpeg, data / "checkerboard" / "nan.tif"]


def test_bad_image_files_stop_the_run_before_training_naming_every_one(data, tmp_path, capsys):
    """Default --bad-images stop: one error naming each bad file, and not one file written."""
    bad = spoil(data)
    code, lines = call(train.main, ["--data", data, "--out", tmp_path / "run", "--epochs", 1, *TINY], capsys)
    error = one_line_error(code, lines, "--bad-images skip", *bad)
    assert "5 bad images" in error and "truncated" in error and "empty file" in error and "NaN" in error
    assert not (tmp_path / "run").exists()


def test_bad_image_files_are_skipped_with_a_warning_each_under_skip(data, tmp_path, capsys):
    """--bad-images skip: a warning per bad file, the run trains on the 12 good images; files that are not
    images by name (notes.txt) or hidden (._0000.png, .DS_Store) are not data at all."""
    bad = spoil(data)
    (data / "vertical" / "notes.txt").write_text("not data")
    (data / "vertical" / "._0000.png").write_bytes(b"\0\5\x16\7 AppleDouble")
    (data / "vertical" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    code, lines = call(train.main, ["--data", data, "--out", tmp_path / "run", "--epochs", 1,
                                    "--bad-images", "skip", *TINY], capsys)
    assert code == 0, lines
    skipped = [line for line in warnings_of(lines) if "skipped bad image" in line]
    assert len(skipped) == len(bad)
    for path in bad:
        assert sum(str(path) in line for line in skipped) == 1, path
    assert any("notes.txt" in line and "without an image extension" in line for line in warnings_of(lines))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["image_list"]["count"] == 12 and config["bad_images"] == "skip"
    # evaluate.py leaves out what training left out: the held-out split is the run's (1 image per class).
    code, _ = call(evaluate.main, [tmp_path / "run", "--json", "--examples", 0], capsys)
    assert code == 0


@pytest.mark.parametrize("case", ["empty class folder", "single class", "missing root", "root is a file",
                                  "class with only bad images"])
def test_data_folder_problems_are_one_line_errors(data, tmp_path, capsys, case):
    flags = []
    if case == "empty class folder":
        os.makedirs(data / "empty")
        named = data / "empty"
    elif case == "single class":
        for name in ("horizontal", "vertical"):
            shutil.rmtree(data / name)
        named = "--data"
    elif case == "missing root":
        data = tmp_path / "no-such-folder"
        named = data
    elif case == "root is a file":
        data = tmp_path / "data.zip"
        data.write_bytes(b"PK")
        named = data
    else:
        for path in (data / "vertical").iterdir():
            path.write_bytes(b"")
        flags, named = ["--bad-images", "skip"], data / "vertical"
    code, lines = call(train.main, ["--data", data, "--out", tmp_path / "run", *flags, *TINY], capsys)
    one_line_error(code, lines, named)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("shape, named", [((6, 64), ["--size 8"]), ((48, 3), ["--size 8", "--scale 4"])])
def test_image_smaller_than_the_patch_or_the_scale_is_refused_naming_it(data, tmp_path, capsys, shape, named):
    """--size 8 --scale 4: a 6-pixel-high image cannot hold a patch, a 3-pixel-wide one not even an
    attention cell. Refused by name (stop), or left out with a warning (skip)."""
    small = data / "vertical" / "small.png"
    iio.imwrite(small, np.zeros((*shape, 3), np.uint8))
    code, lines = call(train.main, ["--data", data, "--out", tmp_path / "run", "--epochs", 1, *TINY], capsys)
    one_line_error(code, lines, small, f"{shape[0]}x{shape[1]}", *named)
    code, lines = call(train.main, ["--data", data, "--out", tmp_path / "run", "--epochs", 1, "--bad-images",
                                    "skip", *TINY], capsys)
    assert code == 0 and any(str(small) in line for line in warnings_of(lines)), lines


def test_image_of_another_size_is_resized_to_the_common_size_with_a_warning(data, tmp_path, capsys):
    """The most common size wins (not the first file's): the odd one is named and resized in every batch."""
    odd = data / "checkerboard" / "0000.png"  # the very first file
    iio.imwrite(odd, np.full((96, 100, 3), 128, np.uint8))
    code, lines = call(train.main, ["--data", data, "--out", tmp_path / "run", "--epochs", 1, *TINY], capsys)
    assert code == 0, lines
    resized = [line for line in warnings_of(lines) if "resized" in line]
    assert len(resized) == 1 and str(odd) in resized[0] and "96x100" in resized[0] and "48x64" in resized[0]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["image_shape"] == [48, 64]


def test_grey_rgba_palette_and_16_bit_images_train(tmp_path, capsys):
    """Every pixel format of a real folder: 8-bit grey, grey + alpha, RGBA, palette, 1-bit, 16-bit grey PNG,
    16-bit RGB TIFF, float TIFF in [0, 1]: all decoded, none refused, a run trains on them."""
    rng = np.random.default_rng(0)
    grey = lambda: rng.integers(0, 256, (48, 64), dtype=np.uint8)  # noqa: E731

    def palette(path):
        image = Image.fromarray((grey() // 64).astype(np.uint8), mode="P")
        image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30])
        image.save(path)

    writers = {
        "grey.png": lambda p: iio.imwrite(p, grey()),
        "grey_alpha.png": lambda p: iio.imwrite(p, np.dstack([grey(), grey()])),
        "rgba.png": lambda p: iio.imwrite(p, np.dstack([grey(), grey(), grey(), grey()])),
        "palette.png": palette,
        "mask.png": lambda p: Image.fromarray(grey() > 128).save(p),
        "grey16.png": lambda p: iio.imwrite(p, grey().astype(np.uint16) * 257),
        "rgb16.tif": lambda p: iio.imwrite(p, np.dstack([grey(), grey(), grey()]).astype(np.uint16) * 257),
        "float.tif": lambda p: iio.imwrite(p, grey().astype(np.float32) / 255),
    }
    for label in ("a", "b", "c"):
        os.makedirs(tmp_path / "data" / label)
        for name, write in writers.items():
            write(str(tmp_path / "data" / label / name))
    code, lines = call(train.main, ["--data", tmp_path / "data", "--out", tmp_path / "run", "--epochs", 1, *TINY],
                       capsys)
    assert code == 0, lines
    assert not warnings_of(lines), lines


@pytest.mark.parametrize("name, content", [("bomb.png", png_bomb()), ("bomb.tif", tiff_bomb()),
                                           ("bomb.bmp", bmp_bomb())], ids=["png", "tiff", "bmp"])
def test_decompression_bomb_is_refused_above_max_pixels(data, tmp_path, capsys, name, content):
    """A file of a few bytes declaring 10^10 pixels is refused from its header (nothing decoded, nothing
    allocated); --max-pixels moves the limit for every image; Pillow's own bomb check speaks our error too."""
    bomb = data / "vertical" / name
    bomb.write_bytes(content)
    started = time.perf_counter()
    code, lines = call(train.main, ["--data", data, "--out", tmp_path / "run", *TINY], capsys)
    one_line_error(code, lines, bomb, "--max-pixels 100,000,000", "100000x100000")
    assert time.perf_counter() - started < 30  # refused, not decoded
    bomb.unlink()
    # 48 x 64 = 3072 pixels: above a limit of 3000 (Pillow only warns below twice its limit) and of 1000.
    for limit in (3000, 1000):
        code, lines = call(train.main, ["--data", data, "--out", tmp_path / "run", "--max-pixels", limit, *TINY],
                           capsys)
        one_line_error(code, lines, f"--max-pixels {limit:,}", "48x64")
    # Pillow's own check, should a format's header escape ours: DecompressionBombError (above twice its
    # limit) and the post-decoding check (between once and twice) both end in AttentionSamplingError.
    image = str(data / "vertical" / "0000.png")
    from attention_sampling.application import decode as data_module
    original = data_module.image_size
    try:
        data_module.image_size = lambda path: None
        for limit, said in ((1000, "DecompressionBombError"), (3000, "--max-pixels 3,000")):
            with pytest.raises(AttentionSamplingError, match=said):
                read_image(image, max_pixels=limit)
    finally:
        data_module.image_size = original
    assert Image.MAX_IMAGE_PIXELS == 3000  # Pillow's limit follows ours
    assert read_image(image, max_pixels=0).shape == (48, 64, 3)  # 0: no limit
    assert Image.MAX_IMAGE_PIXELS is None


# ----------------------------------------------------------------------------- NaN and Inf

def poison(kind, at_call):
    """A train_step that, at its `at_call`-th call, returns a NaN loss or leaves NaN in the weights."""
    real = trainer_module.train_step
    calls = []

    def train_step(model, *args, **kwargs):
        metrics = real(model, *args, **kwargs)
        calls.append(1)
        if len(calls) == at_call:
            if kind == "loss":
                metrics["loss"] = float("nan")
            else:  # finite metrics, broken model: the epoch's last step
                next(iter(model.params.values()))[...] = np.inf
        return metrics

    return train_step


# 12 images, 6 of them for training (15% test, 15% validation, at least one per class each): 3 steps of 2.
@pytest.mark.parametrize("kind, at_call", [("loss", 2), ("weights", 3)])
def test_nan_reaching_the_model_stops_training_and_keeps_the_last_good_checkpoint(run_copy, monkeypatch, capsys,
                                                                                   kind, at_call):
    """Epoch 2 goes wrong (a NaN loss mid-epoch, or infinite weights after the epoch's last step with finite
    metrics): exit 2 with a message, and checkpoint.npz, best.npz, metrics.csv byte for byte those of epoch 1."""
    before = file_bytes(run_copy)
    monkeypatch.setattr(trainer_module, "train_step", poison(kind, at_call))
    code, lines = call(train.main, ["--resume", run_copy, "--epochs", 2, "--quiet"], capsys)
    error = one_line_error(code, lines, "diverged", "epoch 2", "checkpoint.npz is intact (epoch 1)", "--lr")
    assert ("NaN" in error) if kind == "weights" else ("loss nan" in error)
    assert file_bytes(run_copy) == before
    assert load_checkpoint(str(run_copy / "checkpoint.npz"))["meta"]["epoch"] == 1


def test_a_learning_rate_that_diverges_is_stopped_with_a_message(tiny_data, tmp_path, capsys):
    """The real thing: --lr 1e30 overflows in the first steps; no numpy warnings, one line, nothing saved."""
    code, lines = call(train.main, ["--data", tiny_data, "--out", tmp_path / "run", "--lr", "1e30", *TINY],
                       capsys)
    one_line_error(code, lines, "diverged", "epoch 1", "nothing was saved", "--lr")
    assert not any("RuntimeWarning" in line for line in lines)
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


# ----------------------------------------------------------------------------- impossible flags

@pytest.mark.parametrize("flags, named", [
    (["--patches", "0"], "--patches"),
    (["--patches", "-3"], "--patches"),
    (["--size", "4", "--scale", "4"], "--size"),
    (["--size", "3", "--scale", "4"], "--size"),
    (["--batch-size", "0"], "--batch-size"),
    (["--test-fraction", "0"], "--test-fraction"),
    (["--test-fraction", "1"], "--test-fraction"),
    (["--test-fraction", "1.5"], "--test-fraction"),
    (["--test-fraction", "nan"], "--test-fraction"),
    (["--val-fraction", "1"], "--val-fraction"),
    (["--val-fraction", "-0.1"], "--val-fraction"),
    (["--val-fraction", "0.6", "--test-fraction", "0.5"], "--val-fraction"),
    (["--val-repeats", "0"], "--val-repeats"),
    (["--average-from", "-1"], "--average-from"),
    (["--average-from", "5", "--epochs", "4"], "--average-from"),
    (["--temperature", "0"], "--temperature"),
    (["--border", "wrap"], "--border"),
    (["--floor", "1"], "--floor"),
    (["--replicas", "0"], "--replicas"),
    (["--epochs", "0"], "--epochs"),
    (["--lr", "0"], "--lr"),
    (["--lr", "inf"], "--lr"),
    (["--entropy", "nan"], "--entropy"),
    (["--max-pixels", "-1"], "--max-pixels"),
    (["--bad-images", "ignore"], "--bad-images"),
    (["--sampling", "without", "--patches", "500"], "--patches 500"),  # 48x64 at scale 4: 192 cells
], ids=lambda value: " ".join(value) if isinstance(value, list) else None)
def test_impossible_flags_are_one_line_errors(tiny_data, tmp_path, monkeypatch, capsys, flags, named):
    monkeypatch.chdir(tmp_path)
    code, lines = call(train.main, ["--data", tiny_data, *TINY, *flags], capsys)
    one_line_error(code, lines, named)
    assert not os.listdir(tmp_path)  # no run folder


@pytest.mark.parametrize("change", ["--patches 3", "--size 12", "--scale 2", "--estimator expectation",
                                    "renamed class", "removed image", "other architecture"])
def test_resume_refuses_another_architecture_class_list_or_data(run_copy, tiny_data, tmp_path, capsys, change):
    """A resumed run keeps its settings: typed architecture flags, the class folders, the images, and the
    model the checkpoint holds must all be the run's; refused by name, the run left as it was."""
    data = shutil.copytree(tiny_data, tmp_path / "data")
    flags, named = [], []
    if change.startswith("--"):
        flags = change.split()
        named = [f"({flags[0]})", "keeps its settings"]
    elif change == "renamed class":
        os.rename(data / "vertical", data / "diagonal")
        named = ["classes", "diagonal"]
    elif change == "removed image":
        (data / "vertical" / "0003.png").unlink()
        named = ["other images", "12 then, 11 now"]
    else:
        arrays = nn.load_arrays(run_copy / "checkpoint.npz")
        key = next(k for k in arrays if k.startswith("model/params/features."))
        arrays[key] = np.concatenate([arrays[key], arrays[key]])  # a wider layer than this program builds
        nn.save_arrays(run_copy / "checkpoint.npz", arrays)
        named = ["another architecture", "checkpoint.npz"]
    before = file_bytes(run_copy)
    code, lines = call(train.main, ["--resume", run_copy, "--data", data, "--epochs", 2, *flags, "--quiet"], capsys)
    one_line_error(code, lines, "--resume", *named)
    assert file_bytes(run_copy) == before


# ----------------------------------------------------------------------------- broken checkpoints

class LeavesAMark:
    """Unpickling this creates a file: proof that a loader ran pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_broken(kind, path, good, marker):
    if kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "zip of random files":
        rng = np.random.default_rng(0)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("weights.bin", rng.bytes(500))
            archive.writestr("data.pkl", pickle.dumps(LeavesAMark(str(marker))))
            archive.writestr("layer.npy", rng.bytes(300))
    elif kind == "damaged compressed member":
        np.savez_compressed(path, weight=np.arange(1000.0))
        content = bytearray(path.read_bytes())
        content[100:140] = bytes(40)
        path.write_bytes(bytes(content))
    elif kind == "object array":
        np.savez(path, meta=np.array(json.dumps({"format": FORMAT})),
                 payload=np.array([LeavesAMark(str(marker))], dtype=object))
    elif kind == "pickle":
        path.write_bytes(pickle.dumps(LeavesAMark(str(marker))))
    elif kind == "npz without meta":
        np.savez(path, weight=np.ones(3))
    elif kind == "meta not JSON":
        np.savez(path, meta=np.array("<xml>checkpoint</xml>"))
    elif kind == "another program's JSON":
        np.savez(path, meta=np.array(json.dumps({"format": "keras/2", "epoch": 3})))
    elif kind == "our format, fields missing":
        np.savez(path, meta=np.array(json.dumps({"format": FORMAT, "epoch": 1})))


BROKEN = ["truncated", "empty", "zip of random files", "damaged compressed member", "object array", "pickle",
          "npz without meta", "meta not JSON", "another program's JSON", "our format, fields missing"]


@pytest.mark.parametrize("tool", ["train.py --resume", "evaluate.py"])
@pytest.mark.parametrize("kind", BROKEN)
def test_truncated_or_foreign_checkpoint_is_refused_and_never_unpickled(run_copy, tmp_path, capsys, tool, kind):
    marker = tmp_path / "unpickled"
    good = (run_copy / "checkpoint.npz").read_bytes()
    for name in ("checkpoint.npz", "best.npz"):
        write_broken(kind, run_copy / name, good, marker)
    if tool == "evaluate.py":
        code, lines = call(evaluate.main, [run_copy, "--examples", 0], capsys)
        error = one_line_error(code, lines, "best.npz", script="evaluate.py")
    else:
        code, lines = call(train.main, ["--resume", run_copy, "--epochs", 2, "--quiet"], capsys)
        error = one_line_error(code, lines, "checkpoint.npz")
    assert "checkpoint" in error
    assert not marker.exists(), "a pickle was run"


# ----------------------------------------------------------------------------- full disk, read-only folder

def refuse(error_number):
    def raising(*args, **kwargs):
        raise OSError(error_number, os.strerror(error_number))
    return raising


@pytest.fixture(scope="module")
def two_epochs(one_epoch_run, tmp_path_factory):
    """metrics.csv (without seconds) of the 1-epoch run continued, untroubled, to 2 epochs."""
    folder = shutil.copytree(one_epoch_run, tmp_path_factory.mktemp("two-epochs") / "run")
    assert train.main(["--resume", str(folder), "--epochs", "2", "--quiet"]) == 0
    return metrics_without_seconds(folder)


def builtin_open_refusing(folder):
    """open() that raises EROFS for writing anywhere under `folder`, as on a read-only mount."""
    import builtins
    real_open = builtins.open

    def read_only(file, mode="r", *args, **kwargs):
        if str(file).startswith(str(folder)) and any(c in mode for c in "wax+"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), file)
        return real_open(file, mode, *args, **kwargs)

    return read_only


@pytest.mark.parametrize("fault", ["disk full while writing arrays", "read-only folder", "rename refused"])
def test_full_disk_or_read_only_run_folder_is_a_clear_error_and_the_checkpoint_intact(run_copy, two_epochs,
                                                                                       monkeypatch, capsys, fault):
    """Saving epoch 2 fails: one line naming the file and the reason; checkpoint.npz still epoch 1, byte
    for byte, no temporary file left behind; once the disk has room, --resume finishes the run as if
    nothing had happened. (Tests run as root, where chmod blocks nothing: the failing calls are replaced
    by ones raising the OSError the kernel would.)"""
    checkpoint = (run_copy / "checkpoint.npz").read_bytes()
    if fault == "disk full while writing arrays":
        monkeypatch.setattr(np.lib.format, "write_array", refuse(errno.ENOSPC))
        reason = os.strerror(errno.ENOSPC)
    elif fault == "read-only folder":  # every file created in the run folder fails (mkstemp goes through os.open)
        real_open = os.open

        def read_only(path, flags, *args, **kwargs):
            if str(path).startswith(str(run_copy)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", read_only)
        monkeypatch.setattr("builtins.open", builtin_open_refusing(run_copy))
        reason = os.strerror(errno.EROFS)
    else:
        monkeypatch.setattr(os, "replace", refuse(errno.EACCES))
        reason = os.strerror(errno.EACCES)
    code, lines = call(train.main, ["--resume", run_copy, "--epochs", 2, "--quiet"], capsys)
    one_line_error(code, lines, "cannot write", str(run_copy), reason, "checkpoint.npz is intact (epoch 1)")
    monkeypatch.undo()
    assert (run_copy / "checkpoint.npz").read_bytes() == checkpoint
    assert load_checkpoint(str(run_copy / "checkpoint.npz"))["meta"]["epoch"] == 1
    assert not temporaries(run_copy)

    code, lines = call(train.main, ["--resume", run_copy, "--epochs", 2, "--quiet"], capsys)
    assert code == 0, lines
    assert metrics_without_seconds(run_copy) == two_epochs


# ----------------------------------------------------------------------------- kill -9 and Ctrl-C

def environment():
    return {**os.environ, "PYTHONWARNINGS": "ignore"}


class Process:
    """train.py in a subprocess, its stderr read line by line in a thread (so the pipe never fills)."""

    def __init__(self, args, cwd):
        self.started = time.monotonic()
        self.process = subprocess.Popen([sys.executable, TRAIN, *map(str, args)], cwd=cwd, env=environment(),
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines = []
        self.epochs_done = 0  # the last "epoch N ..." line's N
        self.training = threading.Event()  # set once "run: ..." is printed: the trainer is about to fit
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("run: "):
                self.training.set()
            elif line.startswith("epoch "):
                self.epochs_done = int(line.split()[1])
        self.training.set()  # ended

    def finish(self, timeout=180):
        code = self.process.wait(timeout)
        self.reader.join(timeout)
        return code


TIMING_COLUMNS = ("seconds", "waiting")  # wall-clock times: the only columns a repeated run may change


def metrics_without_seconds(run_dir):
    with open(run_dir / "metrics.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def kill_data(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("kill-data"))


@pytest.fixture(scope="module")
def uninterrupted(kill_data, tmp_path_factory):
    """The reference: the same run never interrupted, and how long its start-up and epochs took."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    process = Process(["--data", kill_data, "--out", "run", "--epochs", KILL_EPOCHS, *TINY], folder)
    process.training.wait(180)
    startup = time.monotonic() - process.started
    assert process.finish() == 0, process.lines
    with open(folder / "run" / "metrics.csv", newline="") as handle:
        seconds = [float(row["seconds"]) for row in csv.DictReader(handle)]
    return {"run": folder / "run", "startup": startup, "epoch": float(np.median(seconds))}


def same_as(run_dir, reference):
    assert metrics_without_seconds(run_dir) == metrics_without_seconds(reference)
    ours, theirs = (nn.load_arrays(path / "checkpoint.npz") for path in (run_dir, reference))
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        if key != "meta":
            assert ours[key].tobytes() == theirs[key].tobytes(), key
    assert (load_checkpoint(str(run_dir / "best.npz"))["meta"]["epoch"]
            == load_checkpoint(str(reference / "best.npz"))["meta"]["epoch"])


def test_kill_9_at_random_moments_twenty_times_resumes_to_the_same_numbers(kill_data, uninterrupted, tmp_path):
    """SIGKILL 20 times in a row: during start-up (imports, image checks, config.json), at random moments
    of training, and while a checkpoint is being written (a temporary .npz on disk). Every time the next
    `train.py --resume` carries on, and the finished run equals the uninterrupted one number for number."""
    rng = random.Random(20)
    modes = ["start-up"] * 4 + ["writing"] * 6 + ["training"] * 10
    rng.shuffle(modes)
    run_dir = tmp_path / "run"
    fresh = ["--data", kill_data, "--out", "run", "--epochs", KILL_EPOCHS, *TINY]
    kills = []
    for mode in modes:
        done = load_checkpoint(str(run_dir / "checkpoint.npz"))["meta"]["epoch"] \
            if (run_dir / "checkpoint.npz").exists() else 0
        if mode == "training" and KILL_EPOCHS - done < 3:
            mode = "writing"  # near the end a random delay could outlast the run; a write cannot
        resuming = (run_dir / "config.json").exists()
        process = Process(["--resume", "run", "--quiet"] if resuming else fresh, tmp_path)
        if mode == "start-up":  # before training starts, however fast this process runs
            deadline = time.monotonic() + rng.uniform(0, uninterrupted["startup"])
            while time.monotonic() < deadline and not process.training.is_set():
                time.sleep(0.001)
        else:
            process.training.wait(180)
            if mode == "training":
                # A random moment, but before the last epoch starts, however fast this process runs.
                deadline = time.monotonic() + rng.uniform(0, uninterrupted["epoch"])
                while time.monotonic() < deadline and process.epochs_done < KILL_EPOCHS - 1:
                    time.sleep(0.001)
            else:
                while process.process.poll() is None and not any(
                        name.endswith(".npz") for name in temporaries(run_dir)):
                    time.sleep(0.0002)  # a write (with its fsync) takes milliseconds
        process.process.send_signal(signal.SIGKILL)
        code = process.finish()
        assert code == -signal.SIGKILL, f"{mode}: the run was not killed (exit {code}): {process.lines}"
        assert not any("Traceback" in line or "error" in line for line in process.lines), process.lines
        kills.append((mode, resuming, bool(temporaries(run_dir))))
    assert len(kills) == 20
    assert any(left for _, _, left in kills), "no kill landed while a checkpoint was being written"
    final = Process(["--resume", "run", "--quiet"], tmp_path)
    assert final.finish() == 0, final.lines
    assert not temporaries(run_dir)
    same_as(run_dir, uninterrupted["run"])


def test_ctrl_c_saves_the_epoch_in_progress_and_says_how_to_resume(kill_data, uninterrupted, tmp_path):
    """SIGINT at a random moment of training: exit 130, a checkpoint holding the position inside the epoch,
    and the command that continues; the continued run equals the uninterrupted one."""
    process = Process(["--data", kill_data, "--out", "run", "--epochs", KILL_EPOCHS, *TINY], tmp_path)
    process.training.wait(180)
    time.sleep(0.05 + random.Random(3).uniform(0, 2 * uninterrupted["epoch"]))
    process.process.send_signal(signal.SIGINT)
    assert process.finish() == 130, process.lines
    assert process.lines[-1] == ("interrupted: state saved in run/checkpoint.npz; "
                                 "continue with: python train.py --resume run"), process.lines
    assert not any("Traceback" in line for line in process.lines)
    # Mostly mid-epoch (meta["within_epoch"] holds the position); at an epoch's end, that epoch's checkpoint.
    load_checkpoint(str(tmp_path / "run" / "checkpoint.npz"))
    final = Process(["--resume", "run", "--quiet"], tmp_path)
    assert final.finish() == 0, final.lines
    same_as(tmp_path / "run", uninterrupted["run"])


def test_ctrl_c_before_training_starts_is_a_message_not_a_traceback(data, tmp_path, monkeypatch, capsys):
    """Ctrl-C while the images are checked: nothing to save, exit 130 and what to do."""
    from attention_sampling.application.data import ImageFolder

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ImageFolder, "validate", interrupted)
    code, lines = call(train.main, ["--data", data, "--out", tmp_path / "run", *TINY], capsys)
    assert code == 130 and lines[-1].startswith("interrupted before training started"), lines
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- two processes, one run folder

def test_a_run_folder_in_use_is_refused_naming_it_and_its_owner(run_copy, capsys):
    """While the folder's lock is held, train.py neither resumes nor starts there: one line naming the folder
    and the owner's pid, nothing touched; once released, the run resumes."""
    from attention_sampling.application.runlock import RunLock
    before = file_bytes(run_copy)
    holder = RunLock(str(run_copy)).acquire()
    try:
        code, lines = call(train.main, ["--resume", run_copy, "--epochs", 2, "--quiet"], capsys)
        one_line_error(code, lines, str(run_copy), f"pid {os.getpid()}", "another training process")
        assert file_bytes(run_copy) == before
    finally:
        holder.release()
    code, lines = call(train.main, ["--resume", run_copy, "--epochs", 2, "--quiet"], capsys)
    assert code == 0, lines


def test_a_second_train_py_is_refused_and_the_lock_dies_with_its_process(kill_data, tmp_path):
    """The real thing: a second train.py on a folder a running one trains in exits 2 naming the running one's
    pid; after kill -9 of the first, the lock is free again without any cleaning."""
    from attention_sampling.application.runlock import RunLock
    first = Process(["--data", kill_data, "--out", "run", "--epochs", 1000, *TINY], tmp_path)
    try:
        assert first.training.wait(180) and first.process.poll() is None, first.lines
        second = subprocess.run([sys.executable, TRAIN, "--resume", "run", "--quiet"], cwd=tmp_path,
                                env=environment(), capture_output=True, text=True, timeout=180)
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2, lines
        assert lines[-1].startswith("train.py: error: run: another training process") and \
            f"pid {first.process.pid}" in lines[-1], lines
        assert first.process.poll() is None  # the first run was not disturbed
    finally:
        first.process.kill()
        first.finish()
    RunLock(str(tmp_path / "run")).acquire().release()
