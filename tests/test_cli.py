"""The real command lines, run as subprocesses on tiny generated images: train, evaluate, resume, errors."""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import imageio.v3 as iio
import numpy as np
import pytest

from attention_sampling.application.checkpoint import load_checkpoint
from attention_sampling.application.data import ImageFolder, stratified_split
from attention_sampling.application.embedded import ensure_default_dataset
from attention_sampling.application.evaluation import predict_dataset
from attention_sampling.application.trainer import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "train.py")
EVALUATE = os.path.join(ROOT, "evaluate.py")
TINY = ["--patches", "3", "--size", "12", "--scale", "4", "--replicas", "2", "--batch-size", "4", "--quiet"]
METRIC_COLUMNS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy",
                  "entropy", "distinct_cells", "outside", "reward", "seconds", "waiting"]
TRAIN_FLAGS = ["--data", "--out", "--patches", "--size", "--scale", "--epochs", "--batch-size", "--replicas", "--lr",
               "--lr-drops",
               "--entropy", "--temperature", "--border", "--floor", "--attention-init", "--seed", "--test-fraction",
               "--val-fraction", "--val-repeats", "--average-from", "--estimator", "--sampling", "--cache-mb", "--resume", "--contrast",
               "--zoom", "--no-augment", "--recipe", "--quiet"]
EVALUATE_FLAGS = ["--data", "--split", "--json", "--checkpoint", "--examples", "--seed", "--repeats"]


def environment(tmp):
    # The embedded data set must never be generated into the user's cache by a test.
    return {**os.environ, "ATTENTION_SAMPLING_CACHE": str(tmp), "PYTHONWARNINGS": "ignore"}


def run(script, *args, cwd, timeout=180):
    return subprocess.run([sys.executable, script, *map(str, args)], cwd=cwd, env=environment(cwd),
                          capture_output=True, text=True, timeout=timeout)


def ok(result):
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr}"
    return result


def read_metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.csv"), newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def without_seconds(rows):
    return [{k: v for k, v in row.items() if k not in ("seconds", "waiting")} for row in rows]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def data_root(workspace):
    return ensure_default_dataset(str(workspace / "data"), n_per_class=4, height=64, width=80, spot_size=8,
                                  n_spots=2, n_distractors=1)


@pytest.fixture(scope="module")
def two_epoch_run(workspace, data_root):
    """A finished 2-epoch run; tests that change a run work on a copy."""
    ok(run(TRAIN, "--data", data_root, "--out", "run2", "--epochs", 2, *TINY, cwd=workspace))
    return workspace / "run2"


@pytest.fixture(scope="module")
def three_epoch_run(workspace, data_root):
    ok(run(TRAIN, "--data", data_root, "--out", "run3", "--epochs", 3, *TINY, cwd=workspace))
    return workspace / "run3"


def copy_run(run_dir, tmp_path):
    return shutil.copytree(run_dir, tmp_path / "run")


def test_training_writes_metrics_checkpoints_and_config(two_epoch_run, data_root):
    for name in ("metrics.csv", "checkpoint.npz", "best.npz", "config.json"):
        assert (two_epoch_run / name).is_file(), name
    columns, rows = read_metrics(two_epoch_run)
    assert columns == METRIC_COLUMNS
    assert [row["epoch"] for row in rows] == ["1", "2"]
    for row in rows:
        assert all(np.isfinite(float(row[key])) for key in METRIC_COLUMNS)
        assert 0 <= float(row["test_accuracy"]) <= 1
    config = json.loads((two_epoch_run / "config.json").read_text())
    assert (config["patches"], config["size"], config["scale"], config["epochs"]) == (3, 12, 4, 2)
    assert config["classes"] == ["checkerboard", "horizontal", "vertical"]
    assert config["attention_init"] == "random"
    assert config["aggregate"] == "mean"
    assert (config["augment"], config["contrast"], config["zoom"]) == (True, 0.3, 0.2)
    assert os.path.samefile(config["data"], data_root)
    last = load_checkpoint(str(two_epoch_run / "checkpoint.npz"))["meta"]
    assert last["epoch"] == 2 and last["config"] == config and len(last["history"]) == 2
    # best.npz: the epoch of the highest validation accuracy (ties: lower validation loss), never test's.
    chosen = min(rows, key=lambda row: (-float(row["val_accuracy"]), float(row["val_loss"]), int(row["epoch"])))
    assert load_checkpoint(str(two_epoch_run / "best.npz"))["meta"]["epoch"] == int(chosen["epoch"])


def test_evaluate_prints_the_tables_and_draws_the_pictures(two_epoch_run, tmp_path):
    run_dir = copy_run(two_epoch_run, tmp_path)
    result = ok(run(EVALUATE, run_dir, cwd=tmp_path))
    out = result.stdout
    assert "accuracy" in out and "precision" in out and "recall" in out
    lines = out.splitlines()
    heading = next(i for i, line in enumerate(lines) if line.startswith("confusion matrix"))
    assert lines[heading + 1].split() == ["checkerboard", "horizontal", "vertical"]
    matrix = [line.split() for line in lines[heading + 2:heading + 5]]
    assert [row[0] for row in matrix] == ["checkerboard", "horizontal", "vertical"]
    counts = np.array([[int(v) for v in row[1:]] for row in matrix])
    # The test split holds round(4 * 0.15) = 1 image of each class, at least one.
    np.testing.assert_array_equal(counts.sum(axis=1), [1, 1, 1])

    curves = iio.imread(run_dir / "curves.png")
    assert curves.ndim == 3 and min(curves.shape[:2]) > 200
    # --examples 2 asks for two per class, but the test split has one image of each.
    pictures = sorted(os.listdir(run_dir / "attention"))
    assert pictures == ["checkerboard_0.png", "horizontal_0.png", "vertical_0.png"]
    picture = iio.imread(run_dir / "attention" / pictures[0])
    assert picture.shape[0] > 300 and picture.shape[1] > 300
    assert picture[..., :3].std() > 10  # something was drawn


def test_evaluate_json_matches_predictions_made_in_process(two_epoch_run, tmp_path):
    run_dir = copy_run(two_epoch_run, tmp_path)
    result = json.loads(ok(run(EVALUATE, run_dir, "--json", "--examples", 0, "--repeats", 3, cwd=tmp_path)).stdout)

    state = load_checkpoint(str(run_dir / "best.npz"))
    config = state["meta"]["config"]
    model = build_model(config)
    model.load_state_dict(state["model"])
    dataset = ImageFolder.scan(config["data"])
    test = stratified_split(dataset.labels, config["test_fraction"], config["seed"], config["val_fraction"]).test
    epoch = state["meta"]["epoch"]
    probabilities = predict_dataset(model, dataset, test, tuple(config["image_shape"]), config["batch_size"],
                                    seed=result["seed"])
    accuracy = float(np.mean(probabilities.argmax(axis=1) == dataset.labels[test]))
    assert result["accuracy"] == accuracy
    assert result["epoch"] == epoch and result["images"] == len(test)
    assert result["classes"] == config["classes"] == list(result["per_class"])
    assert np.sum(result["confusion"]) == len(test)
    attention = result["attention"]
    assert 0 <= attention["entropy_median"] <= attention["uniform_entropy"] + 1e-9
    assert 0 < attention["largest_median"] <= 1 and 0 <= attention["largest_above_half"] <= 1
    assert 1 <= attention["distinct_cells_mean"] <= attention["patches"] == config["patches"]
    # By default the sampling seed is the one training scored that epoch with: the numbers match metrics.csv.
    _, rows = read_metrics(run_dir)
    assert result["accuracy"] == float(rows[epoch - 1]["test_accuracy"])
    assert result["loss"] == float(rows[epoch - 1]["test_loss"])
    # --repeats 3: the first is the scoring above; each further one is the same model with the next seed.
    repeats = result["repeats"]
    assert repeats["seeds"] == [result["seed"], result["seed"] + 1, result["seed"] + 2]
    expected = [float(np.mean(predict_dataset(model, dataset, test, tuple(config["image_shape"]), config["batch_size"],
                                              seed=seed).argmax(axis=1) == dataset.labels[test]))
                for seed in repeats["seeds"]]
    assert repeats["accuracies"] == expected and expected[0] == accuracy
    assert (repeats["mean"], repeats["std"]) == pytest.approx((np.mean(expected), np.std(expected)))
    assert (repeats["min"], repeats["max"]) == (min(expected), max(expected))


def test_evaluate_other_splits_and_the_last_checkpoint(two_epoch_run, tmp_path):
    run_dir = copy_run(two_epoch_run, tmp_path)
    result = json.loads(ok(run(EVALUATE, run_dir, "--json", "--split", "all", "--checkpoint", "last",
                               "--examples", 1, "--seed", 5, cwd=tmp_path)).stdout)
    assert (result["images"], result["epoch"], result["seed"]) == (12, 2, 5)
    assert len(os.listdir(run_dir / "attention")) == 3


def test_resume_repeats_an_uninterrupted_run(two_epoch_run, three_epoch_run, tmp_path):
    run_dir = copy_run(two_epoch_run, tmp_path)
    ok(run(TRAIN, "--resume", run_dir, "--epochs", 3, "--quiet", cwd=tmp_path))
    _, resumed = read_metrics(run_dir)
    _, uninterrupted = read_metrics(three_epoch_run)
    assert len(resumed) == 3
    assert without_seconds(resumed) == without_seconds(uninterrupted)


def test_a_killed_run_resumes_to_the_same_numbers(data_root, three_epoch_run, tmp_path):
    """SIGKILL as soon as the first epoch's checkpoint exists; what is on disk must carry on exactly."""
    command = [sys.executable, TRAIN, "--data", data_root, "--out", "killed", "--epochs", "3", *TINY]
    process = subprocess.Popen(command, cwd=tmp_path, env=environment(tmp_path), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "killed" / "checkpoint.npz"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert checkpoint.exists()
    ok(run(TRAIN, "--resume", "killed", "--epochs", 3, "--quiet", cwd=tmp_path))
    _, resumed = read_metrics(tmp_path / "killed")
    _, uninterrupted = read_metrics(three_epoch_run)
    assert without_seconds(resumed) == without_seconds(uninterrupted)


def test_a_learning_rate_drop_added_on_resume_repeats_a_run_made_with_it(two_epoch_run, three_epoch_run, data_root,
                                                                          tmp_path):
    """--lr-drops 2 typed when resuming after epoch 2 gives the numbers of a run started with it; it changes
    epoch 3 (and nothing before); a drop the run has already passed cannot be changed."""
    ok(run(TRAIN, "--data", data_root, "--out", "dropped", "--epochs", 3, "--lr-drops", 2, *TINY, cwd=tmp_path))
    _, with_drop = read_metrics(tmp_path / "dropped")
    run_dir = copy_run(two_epoch_run, tmp_path)
    refused = run(TRAIN, "--resume", run_dir, "--epochs", 3, "--lr-drops", 1, "--quiet", cwd=tmp_path)
    assert refused.returncode == 2 and "--lr-drops" in refused.stderr and "Traceback" not in refused.stderr
    resumed = ok(run(TRAIN, "--resume", run_dir, "--epochs", 3, "--lr-drops", 2, "--quiet", cwd=tmp_path))
    assert "epoch 3: learning rate 0.0001" in resumed.stderr
    _, resumed_rows = read_metrics(run_dir)
    _, constant = read_metrics(three_epoch_run)
    assert without_seconds(resumed_rows) == without_seconds(with_drop)
    assert without_seconds(with_drop)[:2] == without_seconds(constant)[:2]
    assert without_seconds(with_drop)[2] != without_seconds(constant)[2]
    assert json.loads((tmp_path / "dropped" / "config.json").read_text())["lr_drops"] == [2]
    resumed_config = json.loads((run_dir / "config.json").read_text())  # says how the run was trained
    assert (resumed_config["lr_drops"], resumed_config["epochs"]) == ([2], 3)


def test_a_weight_average_added_on_resume_is_evaluated_and_a_missing_one_is_named(two_epoch_run, three_epoch_run,
                                                                                  tmp_path):
    """--average-from 3 typed when resuming after epoch 2 trains epoch 3 as before and writes average.npz, which
    evaluate.py --checkpoint average reads; a run without one gets a one-line error naming the flag."""
    run_dir = copy_run(two_epoch_run, tmp_path)
    assert_one_line_error(run(EVALUATE, run_dir, "--checkpoint", "average", cwd=tmp_path), "--average-from")
    ok(run(TRAIN, "--resume", run_dir, "--epochs", 3, "--average-from", 3, "--quiet", cwd=tmp_path))
    _, resumed = read_metrics(run_dir)
    _, uninterrupted = read_metrics(three_epoch_run)
    assert without_seconds(resumed) == without_seconds(uninterrupted)
    average = load_checkpoint(str(run_dir / "average.npz"))
    assert (average["meta"]["epoch"], average["meta"]["averaged"]) == (3, 1)
    last = load_checkpoint(str(run_dir / "checkpoint.npz"))["model"]
    for key, value in average["model"].items():  # the average of one epoch is that epoch's state
        np.testing.assert_array_equal(value, last[key])
    result = json.loads(ok(run(EVALUATE, run_dir, "--json", "--checkpoint", "average", "--examples", 0,
                               cwd=tmp_path)).stdout)
    assert result["checkpoint"].endswith("average.npz") and result["epoch"] == 3
    refused = run(TRAIN, "--resume", run_dir, "--epochs", 4, "--average-from", 2, "--quiet", cwd=tmp_path)
    assert refused.returncode == 2 and "--average-from 2" in refused.stderr and "Traceback" not in refused.stderr


def test_learning_rate_drops():
    from attention_sampling.application.settings import learning_rate

    assert [learning_rate(1e-3, [2, 4], epoch) for epoch in (1, 2, 3, 4, 5)] == pytest.approx(
        [1e-3, 1e-3, 1e-4, 1e-4, 1e-5])
    assert learning_rate(1e-3, [], 300) == 1e-3


@pytest.mark.parametrize("script, flags", [(TRAIN, TRAIN_FLAGS), (EVALUATE, EVALUATE_FLAGS)],
                         ids=["train", "evaluate"])
def test_help_explains_every_flag(tmp_path, script, flags):
    result = ok(run(script, "--help", cwd=tmp_path))
    for flag in flags:
        assert flag in result.stdout, flag


@pytest.mark.parametrize("args, flag", [
    (["--patches", "0"], "--patches"),
    (["--size", "2", "--scale", "4"], "--size"),
    (["--test-fraction", "1.5"], "--test-fraction"),
    (["--batch-size", "0"], "--batch-size"),
    (["--cache-mb", "-1"], "--cache-mb"),
    (["--attention-init", "zeros"], "--attention-init"),
    (["--contrast", "1.5"], "--contrast"),
    (["--zoom", "-0.1"], "--zoom"),
])
def test_train_refuses_bad_flags(tmp_path, args, flag):
    result = run(TRAIN, *args, cwd=tmp_path)
    assert result.returncode == 2
    assert flag in result.stderr and "Traceback" not in result.stderr
    assert not os.listdir(tmp_path)  # nothing generated, nothing written


@pytest.mark.parametrize("args, flag", [
    (["--split", "validation"], "--split"),
    (["--examples", "-1"], "--examples"),
    (["--checkpoint", "first"], "--checkpoint"),
    (["--repeats", "0"], "--repeats"),
])
def test_evaluate_refuses_bad_flags(tmp_path, args, flag):
    result = run(EVALUATE, tmp_path, *args, cwd=tmp_path)
    assert result.returncode == 2
    assert flag in result.stderr and "Traceback" not in result.stderr


def assert_one_line_error(result, *names):
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evaluate.py: error: "), result.stderr
    for name in names:
        assert name in lines[0]


def test_evaluate_on_a_missing_folder_is_one_line(tmp_path):
    assert_one_line_error(run(EVALUATE, tmp_path / "no-such-run", cwd=tmp_path), "no-such-run")


def test_evaluate_on_a_broken_checkpoint_names_the_file(two_epoch_run, tmp_path):
    run_dir = copy_run(two_epoch_run, tmp_path)
    (run_dir / "best.npz").write_bytes(b"this is not a checkpoint")
    assert_one_line_error(run(EVALUATE, run_dir, cwd=tmp_path), "best.npz")
    (run_dir / "checkpoint.npz").unlink()
    assert_one_line_error(run(EVALUATE, run_dir, "--checkpoint", "last", cwd=tmp_path), "checkpoint.npz")


def test_evaluate_refuses_data_with_other_classes(two_epoch_run, data_root, tmp_path):
    other = shutil.copytree(data_root, tmp_path / "other")
    os.rename(other / "vertical", other / "diagonal")
    assert_one_line_error(run(EVALUATE, two_epoch_run, "--data", other, "--examples", 0, cwd=tmp_path),
                          "--data", "diagonal")


def test_evaluate_without_matplotlib_still_prints_the_numbers(two_epoch_run, tmp_path):
    run_dir = copy_run(two_epoch_run, tmp_path)
    # None in sys.modules makes `import matplotlib` fail, as if it were not installed.
    code = ("import runpy, sys; sys.modules['matplotlib'] = None; "
            f"sys.argv = ['evaluate.py', {str(run_dir)!r}]; sys.path.insert(0, {ROOT!r}); "
            f"runpy.run_path({EVALUATE!r}, run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=environment(tmp_path),
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout and "confusion matrix" in result.stdout
    assert "matplotlib" in result.stderr
    assert not (run_dir / "curves.png").exists() and not (run_dir / "attention").exists()


def test_the_entropy_default_follows_the_estimator_unless_typed():
    import train
    from attention_sampling.application.settings import ENTROPY_BY_ESTIMATOR

    assert train.parse_args([]).entropy == ENTROPY_BY_ESTIMATOR["reinforce"]
    assert train.parse_args(["--estimator", "expectation"]).entropy == ENTROPY_BY_ESTIMATOR["expectation"]
    typed = train.parse_args(["--estimator", "expectation", "--entropy", "0.2"])
    assert typed.entropy == 0.2 and typed.typed["entropy"] == 0.2
    assert "entropy" not in train.parse_args(["--estimator", "expectation"]).typed  # a resume keeps the run's


def test_a_recipe_sets_its_flags_where_none_is_typed_and_is_stored_with_the_run(data_root, tmp_path):
    """--recipe localized is --estimator expectation --entropy 0.001 --sampling without --no-augment
    --attention-symmetry flips, each still overridable; the
    run's config holds the values, so a resume needs no recipe."""
    from attention_sampling.application.settings import RECIPES

    import train

    args = train.parse_args(["--recipe", "localized"])
    assert (args.estimator, args.entropy, args.sampling, args.no_augment, args.attention_symmetry) == \
        ("expectation", 0.001, "without", True, "flips")
    assert RECIPES["localized"] == dict(estimator="expectation", entropy=0.001, sampling="without", augment=False,
                                        attention_symmetry="flips")
    typed = train.parse_args(["--recipe", "localized", "--entropy", "0.02", "--sampling", "with", "--estimator",
                              "reinforce"])
    assert (typed.estimator, typed.entropy, typed.sampling, typed.no_augment) == ("reinforce", 0.02, "with", True)
    assert (train.parse_args([]).sampling, train.parse_args([]).no_augment) == ("with", False)

    ok(run(TRAIN, "--data", data_root, "--out", "recipe", "--epochs", 1, "--recipe", "localized", *TINY, cwd=tmp_path))
    with open(tmp_path / "recipe" / "config.json") as handle:
        config = json.load(handle)
    assert (config["entropy"], config["sampling"], config["augment"], config["attention_symmetry"]) == \
        (0.001, "without", False, "flips")
    ok(run(TRAIN, "--resume", "recipe", "--epochs", 2, "--quiet", cwd=tmp_path))
    assert len(read_metrics(tmp_path / "recipe")[1]) == 2


# What train.py's flags parsed to before they were declared in application/cli.py: every default, and each
# sample command line as its difference from them (--feature-width and --reward came later).
TRAIN_PARSED_DEFAULTS = {
    "aggregate": "mean", "attention_init": "random", "attention_padding": "reflect", "attention_symmetry": "none",
    "average_from": 0,
    "bad_images": "stop", "batch_size": 8, "border": "reflect", "cache_mb": 256, "contrast": 0.3, "data": None,
    "entropy": 0.05, "epochs": None, "estimator": "reinforce", "feature_width": 16, "floor": 0.0, "lr": 0.001, "lr_drops": [],
    "max_pixels": 100000000, "no_augment": False, "out": None, "patches": 20, "quiet": False, "recipe": "default",
    "replicas": 4, "reward": "patch", "resume": None, "sampling": "with", "scale": 4, "seed": 0, "size": 50, "temperature": 3.0,
    "test_fraction": 0.15, "tissue": None, "typed": {}, "val_fraction": 0.15, "val_repeats": 1, "zoom": 0.2}
EVERY_TRAIN_FLAG = dict(
    patches=7, size=30, scale=3, epochs=9, batch_size=5, replicas=3, lr=0.002, lr_drops=[10, 30], entropy=0.2,
    temperature=2.0, border="zero", floor=0.1, attention_init="uniform", attention_padding="edge", attention_symmetry="flips",
    feature_width=24, seed=4,
    test_fraction=0.2, val_fraction=0.0, val_repeats=3, average_from=5, sampling="without", aggregate="attention", reward="look",
    bad_images="skip", max_pixels=1000, contrast=0.1, zoom=0.5, tissue="auto")
TRAIN_PARSED = [
    (["--patches", "7", "--size", "30", "--scale", "3", "--epochs", "9", "--batch-size", "5", "--replicas", "3",
      "--lr", "0.002", "--lr-drops", "30", "10", "30", "--entropy", "0.2", "--temperature", "2", "--border", "zero",
      "--floor", "0.1", "--attention-init", "uniform", "--attention-padding", "edge", "--attention-symmetry", "flips",
      "--feature-width", "24", "--seed", "4",
      "--test-fraction", "0.2", "--val-fraction", "0", "--val-repeats", "3", "--average-from", "5",
      "--estimator", "reinforce", "--sampling", "without", "--aggregate", "attention", "--reward", "look",
      "--bad-images", "skip",
      "--max-pixels", "1000", "--cache-mb", "10", "--contrast", "0.1", "--zoom", "0.5", "--no-augment",
      "--tissue", "auto", "--data", "ROOT", "--out", "RUN", "--quiet"],
     dict(EVERY_TRAIN_FLAG, cache_mb=10, data="ROOT", out="RUN", quiet=True, no_augment=True,
          typed={**{k: v for k, v in EVERY_TRAIN_FLAG.items() if k != "epochs"}, "estimator": "reinforce",
                 "augment": False})),
    (["--recipe", "localized"], dict(entropy=0.001, estimator="expectation", no_augment=True, recipe="localized",
                                     sampling="without", attention_symmetry="flips",
                                     typed=dict(augment=False, entropy=0.001, estimator="expectation",
                                                sampling="without", attention_symmetry="flips"))),
    (["--recipe", "localized", "--entropy", "0.02", "--sampling", "with"],
     dict(entropy=0.02, estimator="expectation", no_augment=True, recipe="localized", attention_symmetry="flips",
          typed=dict(augment=False, entropy=0.02, estimator="expectation", sampling="with",
                     attention_symmetry="flips"))),
    (["--estimator", "expectation"], dict(entropy=0.001, estimator="expectation", typed=dict(estimator="expectation"))),
    (["--estimator", "expectation", "--entropy", "0.3", "--border", "inside"],
     dict(border="inside", entropy=0.3, estimator="expectation",
          typed=dict(border="inside", entropy=0.3, estimator="expectation"))),
    (["--resume", "RUN", "--epochs", "40", "--lr-drops", "20"],
     dict(epochs=40, lr_drops=[20], resume="RUN", typed=dict(lr_drops=[20]))),
    (["--tissue", "none", "--attention-padding", "zero"],
     dict(attention_padding="zero", tissue="none", typed=dict(attention_padding="zero", tissue="none"))),
]


@pytest.mark.parametrize("argv, changed", [([], {})] + TRAIN_PARSED)
def test_train_flags_parse_as_they_always_have(argv, changed):
    import train

    assert vars(train.parse_args(argv)) == {**TRAIN_PARSED_DEFAULTS, **changed}


def test_train_help_shows_every_flag_once():
    import train
    from attention_sampling.application.cli import TRAINING_FLAGS

    result = ok(run(TRAIN, "--help", cwd=ROOT))
    flags = TRAIN_FLAGS + ["--attention-padding", "--aggregate", "--bad-images", "--max-pixels", "--tissue"]
    assert set(train.TRAIN_FLAGS) == set(TRAINING_FLAGS)
    for flag in flags + ["--" + name.replace("_", "-") for name in train.TRAIN_FLAGS]:
        assert f"  {flag} " in result.stdout, flag
