"""The experiment commands on tiny generated data: every method of `compare` trains and reports, and a
killed command resumes from its CSV."""
import csv
import json
import os

import numpy as np
import pytest

from experiments import runs as experiments
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

    # --table-only trains nothing and writes the same table from the CSV.
    (out / "compare.md").unlink()
    assert experiments.main(compare_args(out) + ["--table-only"]) == 0
    assert (out / "compare.md").read_text() == table

    # A second call finds every row done and trains nothing: the CSV is unchanged.
    before = (out / "compare.csv").read_text()
    assert experiments.main(compare_args(out)) == 0
    assert (out / "compare.csv").read_text() == before


def test_a_killed_compare_run_continues_from_its_checkpoint_as_if_never_stopped(tiny_datasets, capsys):
    method = ["--methods", "expectation, without replacement"]
    run = "few-spots/expectation-without-replacement-seed0"
    stopped, straight = tiny_datasets / "compare-stopped", tiny_datasets / "compare-straight"

    def args(out, epochs, *more):
        return compare_args(out) + method + ["--epochs", str(epochs), *more]  # the last --epochs counts

    assert experiments.main(args(stopped, 1)) == 0
    # As a command killed after the run's first epoch leaves it: the checkpoint, no row.
    (stopped / "compare.csv").unlink()
    assert experiments.main(args(stopped, 2)) == 0
    assert experiments.main(args(straight, 2)) == 0
    resumed_rows, straight_rows = (experiments.read_results(out / run / "metrics.csv") for out in (stopped, straight))
    assert [r["epoch"] for r in resumed_rows] == ["1", "2"]
    for a, b in zip(resumed_rows, straight_rows):
        assert {k: v for k, v in a.items() if k not in ("seconds", "waiting")} == \
            {k: v for k, v in b.items() if k not in ("seconds", "waiting")}
    (first,), (second,) = (experiments.read_results(out / "compare.csv") for out in (stopped, straight))
    assert first["test_accuracy"] == second["test_accuracy"] and first["epochs"] == "2"

    # Continuing it with another setting is refused, naming the run's folder, before anything trains.
    (stopped / "compare.csv").unlink()
    assert experiments.main(args(stopped, 3, "--entropy", "0.5")) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{run}: the run was made with entropy = 0.001, not 0.5" in error
    assert len(experiments.read_results(stopped / run / "metrics.csv")) == 2


def test_uniform_attention_is_flat_and_has_nothing_to_learn():
    from experiments.baselines import UniformAttention

    log_attention = UniformAttention(4).forward(np.zeros((2, 17, 25, 3), dtype=np.float32))
    assert log_attention.shape == (2, 4, 6)
    np.testing.assert_allclose(np.exp(log_attention).sum(axis=(1, 2)), 1, rtol=1e-6)


def test_paper_table_summary_layout():
    rows = [dict(paper_size=50, size=15, patches=5, seed=s, epochs=30, test_accuracy_best=a,
                 test_accuracy_last=a - 0.1, val_accuracy=a + 0.05, seconds=600 + 60 * s)
            for s, a in enumerate((0.9, 0.8))]
    table = experiments.summarise(rows, experiments.PAPER_GRID)
    lines = table.splitlines()
    assert len(lines) == 3  # the header, its rule and the one setting that has runs
    cells = [cell.strip() for cell in lines[2].strip("|").split("|")]
    # Runs made before the repeated test scorings have none: a dash, not a number.
    assert cells == ["50 -> 15", "5", "2", "30", "0.850 ± 0.050", "0.750 ± 0.050", "–", "–", "0.900 ± 0.050",
                     "10 ± 0", "0.89 ± 0.02", "0.84"]
    scored = [dict(row, repeats=10, test_repeated_best=a, test_repeated_last=a - 0.2) for row, a in zip(rows, (0.6, 0.7))]
    cells = [cell.strip() for cell in experiments.summarise(scored).splitlines()[2].strip("|").split("|")]
    assert cells[6:8] == ["0.650 ± 0.050", "0.450 ± 0.050"]
    # Only some of the seeds scored, or with other counts: not one mean over them.
    assert experiments.summarise(scored[:1] + rows[1:]).splitlines()[2].split("|")[7].strip() == "–"
    fewer = [dict(row, repeats=3) for row in scored]
    assert "(3 scorings)" in experiments.summarise(fewer).splitlines()[2]
    # Trained without a validation split (--val-fraction 0): nothing was chosen, only the last epoch is shown.
    refit = [dict(row, val_accuracy=float("nan"), best_epoch=30) for row in scored]
    cells = [cell.strip() for cell in experiments.summarise(refit).splitlines()[2].strip("|").split("|")]
    assert cells[4:9] == ["–", "0.750 ± 0.050", "–", "0.450 ± 0.050", "none (--val-fraction 0)"]
    # The same budget with a learning-rate drop is a line of its own.
    dropped = [dict(row, lr_drops="20") for row in rows]
    lines = experiments.summarise(rows + dropped).splitlines()
    assert [line.split("|")[4].strip() for line in lines[2:]] == ["30", "30, lr x 0.1 after 20"]

    # The same runs continued to 60 epochs: a line of their own below, not one mean over both budgets.
    continued = [dict(row, epochs=60, test_accuracy_best=0.7, seconds=1200) for row in rows]
    lines = experiments.summarise(rows + continued, experiments.PAPER_GRID).splitlines()
    assert len(lines) == 4
    assert [[cell.strip() for cell in line.strip("|").split("|")][2:5] for line in lines[2:]] == [
        ["2", "30", "0.850 ± 0.050"], ["2", "60", "0.700 ± 0.000"]]


def test_paper_table_trains_and_resumes(tmp_path, capsys):
    data = ensure_default_dataset(str(tmp_path / "data"), **TINY)
    out = tmp_path / "table"
    args = ["paper-table", "--data", data, "--out", str(out), "--seeds", "1", "--epochs", "1", "--repeats", "3",
            "--batch-size", "4", "--replicas", "1", "--sizes", "10", "6", "--scale", "2", "--grid", "50,1", "20,5"]
    assert experiments.main(args) == 0
    rows = experiments.read_results(out / "results.csv")
    assert {(int(r["paper_size"]), int(r["size"]), int(r["patches"])) for r in rows} == {(50, 10, 1), (20, 6, 5)}
    for row in rows:
        assert int(row["best_epoch"]) == 1 and int(row["scale"]) == 2
        assert 0 <= float(row["test_accuracy_best"]) <= 1
        # 3 scorings of the test split, the first with training's own seed for that epoch.
        assert int(row["repeats"]) == 3 and 0 <= float(row["test_repeated_best"]) <= 1
        assert row["lr_drops"] == ""
        assert float(row["test_repeated_best"]) == float(row["test_repeated_last"])  # one epoch: one checkpoint
    assert experiments.main(args) == 0  # everything done: nothing trained again
    assert len(experiments.read_results(out / "results.csv")) == len(rows)
    # More epochs: the same runs continue from their checkpoints to the new count, taking a learning-rate
    # drop still ahead of them (as train.py --resume does); the run's config says so.
    capsys.readouterr()
    assert experiments.main(args[:8] + ["2"] + args[9:] + ["--lr-drops", "1"]) == 0
    assert capsys.readouterr().err.count("epoch 2: learning rate 0.0001") == 2  # both runs, at lr x 0.1
    longer = [r for r in experiments.read_results(out / "results.csv") if int(r["epochs"]) == 2]
    assert len(longer) == 2 and {r["lr_drops"] for r in longer} == {"1"}
    assert json.loads((out / "S6-P5-seed0" / "config.json").read_text())["lr_drops"] == [1]
    with open(out / "S6-P5-seed0" / "metrics.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 2
    assert "| 2, lr x 0.1 after 1 |" in (out / "table.md").read_text()
    # A drop the runs have passed cannot change: refused before anything trains, naming the folder.
    assert experiments.main(args[:8] + ["3"] + args[9:] + ["--lr-drops", "2"]) == 2
    error = capsys.readouterr().err
    assert "S10-P1-seed0" in error and "--lr-drops 2 would change them" in error and "training" not in error
    # Continued without --lr-drops, a run keeps its own schedule.
    assert experiments.main(args[:8] + ["3"] + args[9:-2] + ["20,5"]) == 0
    assert json.loads((out / "S6-P5-seed0" / "config.json").read_text())["lr_drops"] == [1]
    assert [r["lr_drops"] for r in experiments.read_results(out / "results.csv") if int(r["epochs"]) == 3] == ["1"]
    # A call for one setting (done already: nothing trained) keeps the folder's other settings in table.md.
    assert experiments.main(args[:8] + ["2"] + args[9:-2] + ["20,5"]) == 0
    table = (out / "table.md").read_text()
    assert "20 -> 6" in table and "50 -> 10" in table


def test_results_of_an_older_version_get_the_new_columns(tmp_path):
    """results.csv written before the repeated scorings: its rows are kept, their new cells empty, and the
    next row is appended under the new header; a column this version does not know is refused."""
    path = str(tmp_path / "results.csv")
    old_columns = experiments.RESULT_COLUMNS[:12]
    old_row = {name: str(i) for i, name in enumerate(old_columns)}
    experiments.append_row(path, old_row, old_columns)
    new_row = {name: str(i + 100) for i, name in enumerate(experiments.RESULT_COLUMNS)}
    experiments.append_row(path, new_row)
    rows = experiments.read_results(path)
    assert rows == [dict(old_row, repeats="", test_repeated_best="", test_repeated_last="", lr_drops=""), new_row]
    assert not os.path.exists(path + ".tmp")
    other = str(tmp_path / "other.csv")
    experiments.append_row(other, {"unknown": 1}, ("unknown",))
    with pytest.raises(experiments.AttentionSamplingError, match="unknown"):
        experiments.append_row(other, new_row)


def test_parallel_appends_to_an_older_results_file_keep_every_row(tmp_path):
    """Two jobs finishing at once on a results.csv of an older version: the one that migrates the file must
    not drop the row the other one wrote (the lock is on a file that is never replaced)."""
    import threading

    for attempt in range(5):
        path = str(tmp_path / f"results{attempt}.csv")
        old_columns = experiments.RESULT_COLUMNS[:12]
        experiments.append_row(path, {name: "old" for name in old_columns}, old_columns)
        rows = [{name: f"{job}" for name in experiments.RESULT_COLUMNS} for job in range(4)]
        threads = [threading.Thread(target=experiments.append_row, args=(path, row)) for row in rows]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seeds = sorted(row["seed"] for row in experiments.read_results(path))
        assert seeds == ["0", "1", "2", "3", "old"]


def test_looks_table_reports_accuracy_agreement_and_time_per_k(tmp_path):
    """`experiments looks` on a run's test split: one row per K, accuracies in [0, 1], and with K = 1 the
    repeats (other seeds) may disagree where K = 8 averages them out more."""
    import nn
    from attention_sampling.application.checkpoint import save_checkpoint
    from attention_sampling.application.data import ImageFolder
    from attention_sampling.application.trainer import build_model

    data = ensure_default_dataset(str(tmp_path / "data"), **TINY)
    dataset = ImageFolder.scan(data)
    config = dict(classes=dataset.classes, image_shape=list(dataset.image_shape()), size=8, scale=4, patches=2, seed=0,
                  test_fraction=0.3, val_fraction=0.0, data=data, temperature=3.0, border="reflect", floor=0.0)
    os.makedirs(tmp_path / "run")
    save_checkpoint(str(tmp_path / "run" / "best.npz"), build_model(config), nn.Adam(), np.random.default_rng(0),
                    epoch=1, config=config, history=[])
    out = tmp_path / "looks.md"
    assert experiments.main(["looks", str(tmp_path / "run"), "--looks", "1", "8", "--repeats", "3",
                             "--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| 1 ") or line.startswith("| 8 ")]
    assert len(rows) == 2
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        accuracy = float(cells[1].split(" ± ")[0])
        assert 0 <= accuracy <= 1 and 0 <= float(cells[2]) <= 1 and float(cells[3]) > 0


def test_compare_takes_an_image_folder_and_a_subset_of_methods(tiny_datasets):
    """A folder path is a data set named by its folder; --methods trains only those; each row records the
    estimator, sampling, epochs and the entropy weight it used (the estimator's own default)."""
    from attention_sampling.application.settings import ENTROPY_BY_ESTIMATOR

    folder = ensure_default_dataset(root=str(tiny_datasets / "folders"), **dict(TINY, seed=3))
    out = tiny_datasets / "compare-folder"
    chosen = ["reinforce, with replacement", "expectation, without replacement"]
    args = compare_args(out)
    args[args.index("few-spots")] = folder
    assert experiments.main(args + ["--methods", *chosen]) == 0
    rows = experiments.read_results(out / "compare.csv")
    name = os.path.basename(folder)
    assert [(r["dataset"], r["method"]) for r in rows] == [(name, m) for m in chosen]
    assert [(r["estimator"], r["sampling"], int(r["epochs"])) for r in rows] == [
        ("reinforce", "with", 1), ("expectation", "without", 1)]
    assert [float(r["entropy"]) for r in rows] == [ENTROPY_BY_ESTIMATOR["reinforce"],
                                                   ENTROPY_BY_ESTIMATOR["expectation"]]
    assert name in (out / "compare.md").read_text()
    # Every setting compare does not choose is train.py's default, not that of runs made before it existed.
    from attention_sampling.application.settings import TRAINING_DEFAULTS

    for run in ("reinforce-with-replacement-seed0", "expectation-without-replacement-seed0"):
        config = json.loads((out / name / run / "config.json").read_text())
        for key in ("attention_padding", "border", "temperature", "feature_width", "reward", "contrast"):
            assert config[key] == TRAINING_DEFAULTS[key], (run, key)


def test_compare_names_a_data_set_it_cannot_find(tiny_datasets):
    with pytest.raises(SystemExit, match="no-such-folder"):
        experiments.main(["compare", "--out", str(tiny_datasets / "x"), "--datasets", "no-such-folder"])


def test_a_run_folder_is_not_continued_with_other_settings(tmp_path):
    """paper-table continues an existing run with the run's own settings, so asking for others is refused,
    naming the folder; a run made before a setting existed has the setting's old value (settings.LEGACY)."""
    import json

    from attention_sampling.application.errors import AttentionSamplingError
    from experiments.runs import check_resumed_settings

    run_dir = tmp_path / "S15-P5-seed0"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"entropy": 0.05, "temperature": 3.0}))  # no 'aggregate'
    config = {"run_dir": str(run_dir)}
    check_resumed_settings(config, {"entropy": 0.05, "aggregate": "attention"})
    with pytest.raises(AttentionSamplingError, match=r"S15-P5-seed0.*aggregate = attention, not mean \(--aggregate\)"):
        check_resumed_settings(config, {"entropy": 0.05, "aggregate": "mean"})
    with pytest.raises(AttentionSamplingError, match=r"entropy = 0.05, not 0.01 \(--entropy\)"):
        check_resumed_settings(config, {"entropy": 0.01, "aggregate": "attention"})
    check_resumed_settings({"run_dir": str(tmp_path / "new")}, {"aggregate": "mean"})  # nothing there yet
    # One patch per look: the two classifiers are the same, so either may continue the run; other settings not.
    check_resumed_settings(dict(config, patches=1), {"entropy": 0.05, "aggregate": "mean"})
    with pytest.raises(AttentionSamplingError, match=r"--entropy"):
        check_resumed_settings(dict(config, patches=1), {"entropy": 0.01, "aggregate": "mean"})


def test_compare_on_megapixel_mnist_builds_each_seeds_split_and_reports_the_validation_best_epoch(tmp_path, monkeypatch):
    """megapixel-mnist is written once per seed, for that seed's split (its test canvases hold no digit of
    the others), with its own fractions; each row's test accuracy is its validation-best epoch's."""
    from attention_sampling.application.megapixel_mnist import build
    from tests.application.test_megapixel_mnist import fake_digits

    built = []

    def small_mnist(seed, per_class):
        root = tmp_path / f"mnist-seed{seed}"
        if not root.exists():
            build(str(root), height=120, width=140, n_noise=2, n_per_class=per_class, test_fraction=0.25,
                  val_fraction=0.25, seed=seed, source=fake_digits())
        built.append((seed, per_class))
        return str(root), 0.25, 0.25

    monkeypatch.setattr(experiments, "PER_SEED", {"megapixel-mnist": small_mnist})
    out = tmp_path / "compare"
    args = ["compare", "--out", str(out), "--seeds", "2", "--epochs", "2", "--patches", "2", "--size", "28",
            "--scale", "8", "--downscale", "8", "--batch-size", "4", "--replicas", "1", "--datasets", "megapixel-mnist",
            "--mnist-per-class", "4", "--no-augment",
            "--methods", "reinforce, without replacement", "CNN on the downscaled image"]
    assert experiments.main(args) == 0
    assert {seed for seed, _ in built} == {0, 1} and {n for _, n in built} == {4}
    rows = experiments.read_results(out / "compare.csv")
    assert sorted((r["method"], int(r["seed"])) for r in rows) == [
        ("CNN on the downscaled image", 0), ("CNN on the downscaled image", 1),
        ("reinforce, without replacement", 0), ("reinforce, without replacement", 1)]
    for row in rows:
        assert row["dataset"] == "megapixel-mnist" and int(row["best_epoch"]) in (1, 2)
    for seed in (0, 1):
        run = out / "megapixel-mnist" / f"reinforce-without-replacement-seed{seed}"
        config = json.loads((run / "config.json").read_text())
        assert (config["test_fraction"], config["val_fraction"], config["augment"]) == (0.25, 0.25, False)
        with open(run / "metrics.csv") as handle:
            history = list(csv.DictReader(handle))
        row = next(r for r in rows if r["method"] == "reinforce, without replacement" and int(r["seed"]) == seed)
        best = max(history, key=lambda r: (float(r["val_accuracy"]), -float(r["val_loss"])))
        assert float(row["test_accuracy"]) == pytest.approx(float(best["test_accuracy"]), abs=1e-4)
    # A second command shares the seeds out: --first-seed 2 --seeds 1 trains seed 2 alone, beside the rows there.
    assert experiments.main(args[:args.index("--methods")] + ["--first-seed", "2", "--seeds", "1", "--methods",
                                                               "CNN on the downscaled image"]) == 0
    rows = experiments.read_results(out / "compare.csv")
    assert sorted(int(r["seed"]) for r in rows if r["method"] == "CNN on the downscaled image") == [0, 1, 2]
    assert built[-1][0] == 2


# What paper-table's and compare's flags parsed to before they were declared in application/cli.py: every
# default, and each sample command line as its difference from them.
TABLE_DEFAULTS = {
    "aggregate": "mean", "attention_init": "random", "batch_size": 8, "border": "reflect", "command": "paper-table",
    "contrast": 0.3, "data": None, "entropy": 0.05, "epochs": 300, "floor": 0.0,
    "grid": ["50,1", "50,5", "50,20", "20,5"], "jobs": 1, "lr": 0.001, "lr_drops": None, "no_augment": False,
    "out": "runs/paper-table", "repeats": 10, "replicas": 4, "scale": 4, "seeds": 5, "sizes": [50, 20],
    "temperature": 3.0, "test_fraction": 0.15, "val_fraction": 0.15, "val_repeats": 1, "zoom": 0.2}
COMPARE_DEFAULTS = {
    "aggregate": "mean", "attention_init": "random", "batch_size": 8, "command": "compare",
    "datasets": ["spots", "few-spots"], "downscale": 8, "entropy": None, "epochs": 20, "lr": 0.001,
    "methods": ["reinforce, with replacement", "reinforce, without replacement", "expectation, with replacement",
                "expectation, without replacement", "expectation, without replacement, symmetric attention",
                "expectation, without replacement, symmetric attention, 32 channels",
                "uniform attention (random crops)", "CNN on the downscaled image"],
    "mnist_per_class": 100, "no_augment": False, "out": "runs/compare", "patches": 10, "replicas": 2, "scale": 4,
    "seeds": 3, "first_seed": 0, "size": 50, "table_only": False, "test_fraction": 0.3, "val_fraction": 0.0}
EXPERIMENT_PARSED = [
    (["paper-table"], TABLE_DEFAULTS, {}),
    (["paper-table", "--data", "ROOT", "--out", "OUT", "--seeds", "2", "--epochs", "7", "--sizes", "15", "6",
      "--scale", "2", "--grid", "50,1", "20,5", "--jobs", "2", "--batch-size", "4", "--replicas", "3", "--lr", "0.01",
      "--lr-drops", "5", "3", "--repeats", "4", "--entropy", "0.01", "--temperature", "1.5", "--border", "inside",
      "--floor", "0.05", "--attention-init", "uniform", "--aggregate", "attention", "--test-fraction", "0.25",
      "--val-fraction", "0.1", "--val-repeats", "2", "--contrast", "0", "--zoom", "0", "--no-augment"],
     TABLE_DEFAULTS,
     dict(aggregate="attention", attention_init="uniform", batch_size=4, border="inside", contrast=0.0, data="ROOT",
          entropy=0.01, epochs=7, floor=0.05, grid=["50,1", "20,5"], jobs=2, lr=0.01, lr_drops=[5, 3],
          no_augment=True, out="OUT", repeats=4, replicas=3, scale=2, seeds=2, sizes=[15, 6], temperature=1.5,
          test_fraction=0.25, val_fraction=0.1, val_repeats=2, zoom=0.0)),
    (["paper-table", "--border", "zero", "--lr-drops", "8"], TABLE_DEFAULTS, dict(border="zero", lr_drops=[8])),
    (["compare"], COMPARE_DEFAULTS, {}),
    (["compare", "--out", "OUT", "--datasets", "spots", "ROOT", "--table-only", "--methods",
      "reinforce, with replacement", "--seeds", "1", "--epochs", "2", "--patches", "3", "--size", "12", "--scale", "2",
      "--downscale", "4", "--batch-size", "2", "--replicas", "1", "--lr", "0.005", "--aggregate", "attention",
      "--attention-init", "uniform", "--test-fraction", "0.4", "--val-fraction", "0.2", "--mnist-per-class", "6",
      "--no-augment", "--entropy", "0.02"],
     COMPARE_DEFAULTS,
     dict(aggregate="attention", attention_init="uniform", batch_size=2, datasets=["spots", "ROOT"], downscale=4,
          entropy=0.02, epochs=2, lr=0.005, methods=["reinforce, with replacement"], mnist_per_class=6,
          no_augment=True, out="OUT", patches=3, replicas=1, scale=2, seeds=1, size=12, table_only=True,
          test_fraction=0.4, val_fraction=0.2)),
    (["compare", "--entropy", "0"], COMPARE_DEFAULTS, dict(entropy=0.0)),
]


@pytest.mark.parametrize("argv, defaults, changed", EXPERIMENT_PARSED)
def test_experiment_flags_parse_as_they_always_have(argv, defaults, changed):
    assert vars(experiments.build_parser().parse_args(argv)) == {**defaults, **changed}


@pytest.mark.parametrize("argv, message", [
    (["paper-table", "--entropy", "-1"], "--entropy: must be a number >= 0, got -1"),
    (["paper-table", "--border", "mirror"], "--border: invalid choice: 'mirror'"),
    (["paper-table", "--val-fraction", "1"], "--val-fraction: must be >= 0 and below 1, got 1"),
    (["compare", "--replicas", "0"], "--replicas: must be a positive integer, got 0"),
    (["compare", "--test-fraction", "0"], "--test-fraction: must be strictly between 0 and 1, got 0"),
])
def test_experiment_flags_are_checked_as_train_checks_them(argv, message, capsys):
    with pytest.raises(SystemExit):
        experiments.build_parser().parse_args(argv)
    assert message in capsys.readouterr().err
