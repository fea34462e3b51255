"""The experiment commands on tiny generated data: every method of `compare` trains and reports, and a
killed command resumes from its CSV."""
import numpy as np
import pytest

from attention_sampling.application import experiments
from attention_sampling.application.embedded import ensure_default_dataset

TINY = dict(n_per_class=4, height=48, width=64, spot_size=6, n_spots=2, n_distractors=1)


@pytest.fixture
def tiny_datasets(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTENTION_SAMPLING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(experiments, "DATASETS", {"spots": dict(TINY, seed=1), "few-spots": dict(TINY, seed=2, n_spots=1)})
    return tmp_path


def compare_args(out):
    return ["compare", "--out", str(out), "--seeds", "1", "--epochs", "1", "--patches", "2", "--size", "8",
            "--scale", "4", "--downscale", "4", "--batch-size", "4", "--replicas", "1", "--datasets", "few-spots"]


def test_compare_trains_every_method_and_resumes(tiny_datasets, capsys):
    out = tiny_datasets / "compare"
    assert experiments.main(compare_args(out)) == 0
    rows = experiments.read_results(out / "compare.csv")
    assert {(r["dataset"], r["method"]) for r in rows} == {
        ("few-spots", m) for m in experiments.METHODS}
    for row in rows:
        assert 0 <= float(row["test_accuracy"]) <= 1 and float(row["peak_mb"]) > 0
    table = (out / "compare.md").read_text()
    assert table.count("\n") == 2 + len(rows)

    # A second call finds every row done and trains nothing: the CSV is unchanged.
    before = (out / "compare.csv").read_text()
    assert experiments.main(compare_args(out)) == 0
    assert (out / "compare.csv").read_text() == before


def test_uniform_attention_is_flat_and_has_nothing_to_learn():
    from attention_sampling.application.baselines import UniformAttention

    log_attention = UniformAttention(4).forward(np.zeros((2, 17, 25, 3), dtype=np.float32))
    assert log_attention.shape == (2, 4, 6)
    np.testing.assert_allclose(np.exp(log_attention).sum(axis=(1, 2)), 1, rtol=1e-6)


def test_paper_table_summary_layout():
    rows = [dict(size=50, patches=5, seed=s, train_accuracy=a, test_accuracy=a - 0.1, seconds=10 + s)
            for s, a in enumerate((0.9, 0.8))]
    table = experiments.summarise(rows, experiments.PAPER_GRID)
    assert "0.850 ± 0.050" in table and "0.750 ± 0.050" in table
    assert len(table.splitlines()) == 2  # the header and the one setting that has runs


def test_paper_table_trains_and_resumes(tmp_path):
    data = ensure_default_dataset(str(tmp_path / "data"), **TINY)
    args = ["paper-table", "--data", data, "--out", str(tmp_path / "table"), "--seeds", "1", "--epochs", "1",
            "--batch-size", "4", "--replicas", "1"]
    assert experiments.main(args) == 0
    rows = experiments.read_results(tmp_path / "table" / "results.csv")
    assert {(int(r["size"]), int(r["patches"])) for r in rows} == set(experiments.PAPER_GRID)
    assert experiments.main(args) == 0
    assert len(experiments.read_results(tmp_path / "table" / "results.csv")) == len(rows)
