"""train.py, evaluate.py and predict.py on a folder of whole-slide images (small pyramidal TIFFs), and
the bad slides every folder has: one line naming the file and exit code 2, or left out under skip."""
import json
import os
import shutil

import numpy as np
import pytest
import tifffile

import evaluate
import predict
import train
from attention_sampling.application.slidewriter import Tissue, write_pyramid

TINY = ["--patches", "2", "--size", "8", "--scale", "4", "--batch-size", "2", "--replicas", "1", "--quiet"]
HEIGHT, WIDTH = 96, 128


def write_slides(root, per_class=4):
    """ROOT/<horizontal|vertical>/<i>.tif: tissue with spots of stripes, 3 levels in 32 x 32 tiles."""
    for label in ("horizontal", "vertical"):
        os.makedirs(root / label, exist_ok=True)
        for i in range(per_class):
            tissue = Tissue(HEIGHT, WIDTH, seed=i + 10 * (label == "vertical"), blobs=3, spots=label, n_spots=3,
                            spot_size=12)
            write_pyramid(str(root / label / f"{i}.tif"), HEIGHT, WIDTH, tissue, (1, 2, 4), tile=32)
    return root


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    return write_slides(tmp_path_factory.mktemp("slides") / "data")


@pytest.fixture(scope="module")
def trained(slides, tmp_path_factory):
    """A 1-epoch run on the slides, made once; the tests only read it."""
    run = tmp_path_factory.mktemp("run") / "run"
    assert train.main([str(a) for a in ["--data", slides, "--out", run, "--epochs", 1, *TINY]]) == 0
    return run


def call(main, argv, capsys):
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


def test_train_evaluate_and_predict_run_on_a_folder_of_slides(slides, trained, tmp_path, capsys):
    run = trained
    config = json.loads((run / "config.json").read_text())
    assert config["image_shape"] == [HEIGHT, WIDTH]
    code, out, lines = call(evaluate.main, [run, "--json", "--examples", 1], capsys)
    assert code == 0, lines
    result = json.loads(out)
    assert result["images"] == 2 and len(result["pictures"]) == 3  # curves + one picture per class
    pictures = tmp_path / "pictures"
    code, out, lines = call(predict.main, [run, slides / "vertical", "--json", "--pictures", pictures, "--looks", 2],
                            capsys)
    assert code == 0, lines
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 4 and all("error" not in row and row["looks"] == 2 for row in rows)
    assert len(os.listdir(pictures)) == 4


def test_a_slide_of_another_size_is_predicted_at_its_own_size(trained, tmp_path, capsys):
    """The networks are convolutional: predict.py reads a slide where it is, whatever its size."""
    run = trained
    big = tmp_path / "big.tif"
    write_pyramid(str(big), 200, 260, Tissue(200, 260, seed=3, spots="vertical"), (1, 2, 4), tile=64)
    code, out, lines = call(predict.main, [run, big, "--json"], capsys)
    assert code == 0, lines
    assert json.loads(out)["prediction"] in ("horizontal", "vertical")


def spoil(data):
    """Three bad slides: truncated, without the level --max-pixels 1000 needs, an unknown vendor format."""
    good = data / "horizontal" / "0.tif"
    truncated = data / "horizontal" / "truncated.tif"
    content = good.read_bytes()
    truncated.write_bytes(content[:len(content) * 2 // 3])
    flat = data / "vertical" / "one-level.tif"
    tifffile.imwrite(flat, Tissue(HEIGHT, WIDTH, seed=5)(1, 0, 0, HEIGHT, WIDTH), tile=(32, 32))
    unknown = data / "vertical" / "scanner.svs"
    unknown.write_bytes(b"VENDOR-FORMAT\0" + bytes(range(256)) * 64)
    return [truncated, flat, unknown]


def test_bad_slides_stop_the_run_in_one_line_naming_each(slides, tmp_path, capsys):
    data = shutil.copytree(slides, tmp_path / "data")
    bad = spoil(data)
    code, _, lines = call(train.main, ["--data", data, "--out", tmp_path / "run", "--epochs", 1, "--max-pixels", 1000,
                                       *TINY], capsys)
    assert code == 2, lines
    errors = [line for line in lines if line.startswith("train.py: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "3 bad images" in errors[0]
    assert "truncated slide" in errors[0] and "no pyramid level" in errors[0] and "cannot read slide" in errors[0]
    for path in bad:
        assert str(path) in errors[0]
    assert not any("Traceback" in line for line in lines)
    assert not (tmp_path / "run").exists()


def test_bad_slides_are_left_out_under_skip(slides, tmp_path, capsys):
    data = shutil.copytree(slides, tmp_path / "data")
    bad = spoil(data)
    code, _, lines = call(train.main, ["--data", data, "--out", tmp_path / "run", "--epochs", 1, "--max-pixels", 1000,
                                       "--bad-images", "skip", *TINY], capsys)
    assert code == 0, lines
    skipped = [line for line in lines if "skipped bad image" in line]
    assert len(skipped) == 3 and all(any(str(path) in line for line in skipped) for path in bad)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["image_list"]["count"] == 8


def test_predict_names_a_bad_slide_and_exits_2(slides, trained, tmp_path, capsys):
    run = trained
    bad = spoil(shutil.copytree(slides, tmp_path / "data"))
    for path in (bad[0], bad[2]):
        code, _, lines = call(predict.main, [run, path], capsys)
        assert code == 2 and len(lines) == 1 and str(path) in lines[0], lines


def test_a_slide_of_another_size_is_a_bad_image_of_the_folder(slides, tmp_path):
    """Slides are not resized: one of another size than the folder's common one is named and left out."""
    from attention_sampling.application.data import ImageFolder

    data = shutil.copytree(slides, tmp_path / "data")
    other = data / "vertical" / "other.tif"
    write_pyramid(str(other), 64, 160, Tissue(64, 160, seed=7, spots="vertical"), (1, 2, 4), tile=32)
    dataset = ImageFolder.scan(str(data))
    assert dataset.lazy and dataset.image_shape() == (HEIGHT, WIDTH)
    kept, report = dataset.validate(8, 4, "skip")
    assert [path for path, _ in report.bad] == [str(other)] and "not the common 96x128" in report.bad[0][1]
    assert len(kept) == 8 and kept.shape == (HEIGHT, WIDTH)


def corrupt_level_0(path):
    """Overwrite the start of every level-0 tile with garbage: the header and the other levels stay good,
    so the slide passes validation and fails only where a patch is read."""
    with tifffile.TiffFile(path) as tiff:
        page = tiff.series[0].levels[0].pages[0]
        spans = list(zip(page.dataoffsets, page.databytecounts))
    with open(path, "r+b") as handle:
        for offset, count in spans:
            handle.seek(offset)
            handle.write(b"\xff" * min(16, count))


def test_a_tile_that_does_not_decode_stops_training_and_is_an_error_in_predict(slides, trained, tmp_path, capsys):
    data = shutil.copytree(slides, tmp_path / "data")
    broken = data / "vertical" / "2.tif"
    corrupt_level_0(broken)
    code, _, lines = call(train.main, ["--data", data, "--out", tmp_path / "run", "--epochs", 1, *TINY], capsys)
    assert code == 2 and lines[-1].startswith("train.py: error: ") and str(broken) in lines[-1], lines
    assert "cannot decode the tiles of level 0" in lines[-1] and not any("Traceback" in line for line in lines)
    code, out, lines = call(predict.main, [trained, data / "vertical", "--json"], capsys)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [row["path"] for row in rows if "error" in row] == [str(broken)]


# ----------------------------------------------------------------------------- --tissue

def test_slides_are_sampled_on_their_tissue_by_default_and_the_share_is_logged(slides, trained, tmp_path, capsys):
    """A run on slides takes --tissue auto: metrics.csv, evaluate and predict report the share of patches on
    tissue, every one of them."""
    import csv

    run = trained
    assert json.loads((run / "config.json").read_text())["tissue"] == "auto"
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert float(rows[-1]["on_tissue"]) == 1.0
    code, out, lines = call(evaluate.main, [run, "--json", "--examples", 0], capsys)
    assert code == 0, lines
    result = json.loads(out)
    assert result["tissue"] == "auto" and result["on_tissue"] == 1.0
    slide = slides / "horizontal" / "0.tif"
    code, out, lines = call(predict.main, [run, slide, "--json", "--looks", 4], capsys)
    assert code == 0, lines
    assert json.loads(out)["on_tissue"] == 1.0
    code, out, lines = call(predict.main, [run, slide], capsys)
    assert "on tissue 100%" in out
    code, out, lines = call(predict.main, [run, slide, "--json", "--tissue", "none"], capsys)
    assert code == 0 and "on_tissue" not in json.loads(out)


def test_a_slide_without_tissue_is_one_error_naming_it(trained, tmp_path, capsys):
    glass = str(tmp_path / "glass.tif")
    write_pyramid(glass, HEIGHT, WIDTH, Tissue(HEIGHT, WIDTH, blobs=0), (1, 2, 4), tile=32)
    code, out, lines = call(predict.main, [trained, glass], capsys)
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith(f"predict.py: error: {glass}: no tissue found") and "--tissue none" in lines[0]
    code, out, lines = call(predict.main, [trained, glass, "--tissue", "none", "--json"], capsys)
    assert code == 0 and "prediction" in json.loads(out)


def test_a_run_made_before_tissue_masks_resumes_and_predicts_without_one(slides, tmp_path, capsys):
    """A config without the key is a run sampled everywhere: resumed so, and --tissue auto on it is refused."""
    run = tmp_path / "old"
    assert train.main([str(a) for a in ["--data", slides, "--out", run, "--epochs", 1, "--tissue", "none",
                                         *TINY]]) == 0
    import nn

    config = json.loads((run / "config.json").read_text())
    assert config.pop("tissue") == "none"
    (run / "config.json").write_text(json.dumps(config))
    for name in ("checkpoint.npz", "best.npz"):  # the config stored with the model, as an old run holds it
        arrays = nn.load_arrays(str(run / name))
        meta = json.loads(str(arrays["meta"]))
        del meta["config"]["tissue"]
        arrays["meta"] = np.array(json.dumps(meta))
        nn.save_arrays(str(run / name), arrays)
    code, out, lines = call(predict.main, [run, slides / "vertical" / "1.tif", "--json"], capsys)
    assert code == 0 and "on_tissue" not in json.loads(out)
    code, out, lines = call(train.main, ["--resume", run, "--epochs", 2, "--tissue", "auto", "--quiet"], capsys)
    assert code == 2 and "tissue = none" in lines[-1]


def test_a_slide_of_glass_in_the_folder_is_a_bad_image_found_before_training(slides, tmp_path, capsys):
    """--tissue auto checks every slide's view once: glass alone stops the run naming it, or is skipped."""
    data = shutil.copytree(slides, tmp_path / "data")
    glass = data / "vertical" / "glass.tif"
    write_pyramid(str(glass), HEIGHT, WIDTH, Tissue(HEIGHT, WIDTH, blobs=0), (1, 2, 4), tile=32)
    code, _, lines = call(train.main, ["--data", data, "--out", tmp_path / "run", "--epochs", 1, *TINY], capsys)
    assert code == 2 and lines[-1].startswith("train.py: error: 1 bad image") and f"{glass}: no tissue found" in lines[-1]
    code, _, lines = call(train.main, ["--data", data, "--out", tmp_path / "run", "--epochs", 1, "--bad-images", "skip",
                                       *TINY], capsys)
    assert code == 0, lines
    assert any("skipped bad image" in line and str(glass) in line for line in lines)
    code, _, lines = call(train.main, ["--data", data, "--out", tmp_path / "everywhere", "--epochs", 1,
                                       "--tissue", "none", *TINY], capsys)
    assert code == 0, lines
