"""report.py: a fresh page removes the pictures of the page it replaces, and nothing else; --resume keeps them."""
import json

import pytest

from attention_sampling.application.errors import AttentionSamplingError
from attention_sampling.application.report import ROWS_FILE, Report


def row(path, picture):
    return {"path": path, "prediction": "a", "probabilities": {"a": 0.75, "b": 0.25}, "attention_entropy": 1.0,
            "looks": 1, "spread": 0.0, "agreement": 1.0, "report": {"picture": picture, "weights": [0.5, 0.5]}}


def earlier_page(directory, run):
    """DIR as an earlier prediction of `run` left it, beside a user's own files -> (pictures, user files)."""
    images = directory / "images"
    images.mkdir(parents=True)
    pictures = [images / "one-0123abcd.png", images / "two-4567ef01.png"]
    for picture in pictures:
        picture.write_bytes(b"png")
    user = [images / "notes.txt", images / "mine.png", directory / "outside.png"]
    for path in user:
        path.write_bytes(b"keep")
    rows = [row("one.png", "images/one-0123abcd.png"), row("two.png", "images/two-4567ef01.png"),
            row("gone.png", "images/gone-89abcdef.png"),  # already removed by hand
            row("edited.png", "../outside.png"), row("odd.png", "images/notes.txt"), {"path": "x", "error": "e"}]
    (directory / ROWS_FILE).write_text(json.dumps({"run": str(run), "rows": rows}))
    (directory / "index.html").write_text("<html>earlier page</html>")
    return pictures, user


def test_a_fresh_page_removes_the_earlier_pages_pictures_only(tmp_path):
    directory, run = tmp_path / "review", tmp_path / "run"
    pictures, user = earlier_page(directory, run)
    report = Report(str(directory), str(run))
    assert not any(picture.exists() for picture in pictures)
    assert all(path.read_bytes() == b"keep" for path in user)
    assert json.loads((directory / ROWS_FILE).read_text())["rows"] == [] and report.rows == []
    assert "0 image(s)" in (directory / "index.html").read_text()  # the page no longer shows them
    report.add(row("three.png", "images/three-aaaaaaaa.png"))
    assert [r["path"] for r in json.loads((directory / ROWS_FILE).read_text())["rows"]] == ["three.png"]


def test_resume_keeps_the_earlier_pages_pictures_and_rows(tmp_path):
    directory, run = tmp_path / "review", tmp_path / "run"
    pictures, _ = earlier_page(directory, run)
    report = Report(str(directory), str(run), resume=True)
    assert all(picture.exists() for picture in pictures) and len(report.rows) == 6
    assert (directory / "index.html").read_text() == "<html>earlier page</html>"


def test_another_runs_page_is_refused_and_keeps_its_pictures(tmp_path):
    directory = tmp_path / "review"
    pictures, _ = earlier_page(directory, tmp_path / "run")
    with pytest.raises(AttentionSamplingError, match="another run"):
        Report(str(directory), str(tmp_path / "other"))
    assert all(picture.exists() for picture in pictures)
