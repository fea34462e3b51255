"""predict.py on a tiny trained run: rows per image, reproducible draws, error rows, looks, pictures."""
import csv
import io
import json
import os

import numpy as np
import pytest

from tests.commands import PREDICT, run

# One run of 4 images per class (tests/conftest.py's `trained`) for every test here.
pytestmark = pytest.mark.parametrize("trained", [4], indirect=True)


def json_rows(result):
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_every_image_of_a_folder_gets_a_row_and_the_draws_do_not_depend_on_the_company(trained):
    workspace, run_dir, data = trained
    rows = json_rows(run(PREDICT, run_dir, data, "--json", "--quiet", cwd=workspace))
    assert len(rows) == 12  # 4 per class, found recursively
    for row in rows:
        assert row["prediction"] in ("checkerboard", "horizontal", "vertical")
        assert abs(sum(row["probabilities"].values()) - 1) < 1e-4 and row["attention_entropy"] > 0
    alone = json_rows(run(PREDICT, run_dir, rows[5]["path"], "--json", cwd=workspace))
    assert alone == [rows[5]]  # the same image, predicted alone: the same draws, the same numbers
    other_seed = json_rows(run(PREDICT, run_dir, rows[5]["path"], "--json", "--seed", 1, cwd=workspace))
    assert other_seed[0]["probabilities"] != rows[5]["probabilities"]


def test_looks_average_and_report_their_spread(trained):
    workspace, run_dir, data = trained
    image = os.path.join(data, "horizontal", sorted(os.listdir(os.path.join(data, "horizontal")))[0])
    one, = json_rows(run(PREDICT, run_dir, image, "--json", cwd=workspace))
    many, = json_rows(run(PREDICT, run_dir, image, "--json", "--looks", 8, cwd=workspace))
    assert one["looks"] == 1 and one["spread"] == 0 and one["agreement"] == 1
    assert many["looks"] == 8 and many["spread"] > 0 and 0 < many["agreement"] <= 1
    assert abs(sum(many["probabilities"].values()) - 1) < 1e-4


def test_an_unreadable_image_is_an_error_row_and_the_rest_go_on(trained, tmp_path):
    workspace, run_dir, data = trained
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    good = os.path.join(data, "vertical", sorted(os.listdir(os.path.join(data, "vertical")))[0])
    result = run(PREDICT, run_dir, good, bad, "--csv", cwd=workspace)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["path"] for row in rows] == [good, str(bad)]
    assert rows[0]["error"] == "" and rows[0]["prediction"]
    assert "broken.png" in rows[1]["error"] and rows[1]["prediction"] == ""
    assert "1 of 2 images could not be read" in result.stderr
    alone = run(PREDICT, run_dir, bad, cwd=workspace)
    assert alone.returncode == 2 and len(alone.stderr.strip().splitlines()) == 1 and "broken.png" in alone.stderr


def test_reading_ahead_gives_each_image_the_row_it_gets_alone(trained, tmp_path):
    """predict_in_process reads image i + 1 while it classifies image i: the rows, an unreadable image's error row
    among them, are those of reading and classifying each image on its own."""
    from attention_sampling.application.prediction import model_from_checkpoint, predict_in_process, predict_path

    workspace, run_dir, data = trained
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    good = [os.path.join(data, kind, sorted(os.listdir(os.path.join(data, kind)))[0]) for kind in ("vertical", "horizontal")]
    paths = [good[0], str(bad), good[1]]
    checkpoint = os.path.join(run_dir, "best.npz")
    config, model, _ = model_from_checkpoint(checkpoint)
    alone = [predict_path(model, config, path, seed=2, looks=2) for path in paths]
    assert "broken.png" in alone[1]["error"] and "error" not in alone[0]
    assert list(predict_in_process(checkpoint, paths, seed=2, looks=2)) == alone


def test_pictures_are_drawn_per_image(trained, tmp_path):
    workspace, run_dir, data = trained
    folder = os.path.join(data, "checkerboard")
    result = run(PREDICT, run_dir, folder, "--pictures", tmp_path / "pictures", "--quiet", cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 4
    assert sorted(os.listdir(tmp_path / "pictures")) == sorted(
        name for name in os.listdir(tmp_path / "pictures") if name.endswith(".png")) and \
        len(os.listdir(tmp_path / "pictures")) == 4


def test_a_foreign_checkpoint_is_one_line_and_never_unpickled(trained, tmp_path):
    workspace, _, data = trained
    run_dir = tmp_path / "foreign"
    run_dir.mkdir()
    np.savez(run_dir / "best.npz", weights=np.arange(3))  # an .npz, but not this program's checkpoint
    result = run(PREDICT, run_dir, data, cwd=workspace)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "not a checkpoint of this program" in result.stderr


@pytest.mark.parametrize("arguments, message", [
    (["missing-run", "x.png"], "missing-run: no such run folder"),
    (["{run}", "no-such-image.png"], "no-such-image.png: no such file or folder"),
    (["{run}", "x.png", "--looks", "0"], "--looks"),
])
def test_bad_input_is_one_line_and_exit_code_2(trained, arguments, message):
    workspace, run_dir, _ = trained
    result = run(PREDICT, *[a.format(run=run_dir) for a in arguments], cwd=workspace)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


def test_output_resumes_where_a_stopped_archive_was(trained, tmp_path):
    """--output FILE --resume: the rows already in FILE (a last line cut by a kill aside) are skipped, the
    rest appended; the finished file holds every image once, with the numbers of an uninterrupted run."""
    workspace, run_dir, data = trained
    full = tmp_path / "full.jsonl"
    assert run(PREDICT, run_dir, data, "--json", "--output", full, "--quiet", cwd=workspace).returncode == 0
    lines = full.read_text().splitlines()
    stopped = tmp_path / "stopped.jsonl"
    stopped.write_text("\n".join(lines[:5]) + "\n" + lines[5][:20])  # five rows and a cut one
    result = run(PREDICT, run_dir, data, "--json", "--output", stopped, "--resume", "--quiet", cwd=workspace)
    assert result.returncode == 0, result.stderr
    assert "5 image(s) done, 7 to go" in result.stderr
    rows = [json.loads(line) for line in stopped.read_text().splitlines()]
    assert sorted(row["path"] for row in rows) == sorted(json.loads(line)["path"] for line in lines)
    assert sorted(rows, key=lambda row: row["path"]) == sorted(map(json.loads, lines), key=lambda row: row["path"])


def test_a_local_cluster_of_two_workers_gives_the_same_rows(trained):
    pytest.importorskip("distributed")
    workspace, run_dir, data = trained
    alone = json_rows(run(PREDICT, run_dir, data, "--json", "--quiet", cwd=workspace))
    clustered = json_rows(run(PREDICT, run_dir, data, "--json", "--quiet", "--workers", 2, cwd=workspace))
    assert clustered == alone


def test_an_unreachable_scheduler_is_one_line(trained):
    pytest.importorskip("distributed")
    workspace, run_dir, data = trained
    result = run(PREDICT, run_dir, data, "--scheduler", "tcp://127.0.0.1:9", cwd=workspace)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "--scheduler tcp://127.0.0.1:9" in result.stderr
