"""The trainer's choice of best epoch: on validation only, never on the test split."""
import math
from types import SimpleNamespace

import numpy as np
import pytest

from attention_sampling.application.data import Augmentation
from attention_sampling.application.errors import AttentionSamplingError
from attention_sampling.application.trainer import EpochTotals, Trainer, augmentation, best_epoch, build_model


def noise_folder(root, per_class, seed):
    """Two classes a and b of `per_class` 24 x 32 noise PNGs each, under root -> its ImageFolder."""
    import imageio.v3 as iio

    from attention_sampling.application.data import ImageFolder

    rng = np.random.default_rng(seed)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            iio.imwrite(root / label / f"{i}.png", rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    return ImageFolder.scan(str(root))


def row(epoch, val_accuracy, val_loss, test_accuracy):
    return {"epoch": epoch, "val_accuracy": val_accuracy, "val_loss": val_loss, "test_accuracy": test_accuracy}


def test_best_epoch_follows_validation_not_test():
    history = [row(1, 0.5, 1.0, 0.9), row(2, 0.8, 0.9, 0.4), row(3, 0.7, 0.5, 0.95)]
    assert best_epoch(history) == 2


def test_best_epoch_breaks_accuracy_ties_by_validation_loss_then_by_the_earlier_epoch():
    assert best_epoch([row(1, 0.8, 0.7, 0), row(2, 0.8, 0.6, 0), row(3, 0.8, 0.6, 1)]) == 2


def test_without_validation_the_last_epoch_is_best():
    nan = math.nan
    assert best_epoch([row(1, nan, nan, 0.9), row(2, nan, nan, 0.1)]) == 2
    # A history written before validation existed has no val columns at all.
    assert best_epoch([{"epoch": 1, "test_accuracy": 0.9}, {"epoch": 2, "test_accuracy": 0.1}]) == 2


def test_epoch_totals_average_per_image_over_uneven_batches():
    totals = EpochTotals()
    totals.add({"loss": 1.0, "accuracy": 1.0, "entropy": 2.0, "reward": 0.5, "distinct_cells": 4, "outside": 0}, 3)
    totals.add({"loss": 2.0, "accuracy": 0.0, "entropy": 4.0, "reward": 0.0, "distinct_cells": 8, "outside": 1}, 1)
    assert totals.images == 4
    assert math.isclose(totals.mean("loss"), 1.25) and math.isclose(totals.mean("accuracy"), 0.75)
    assert math.isclose(totals.mean("entropy"), 2.5) and math.isclose(totals.mean("reward"), 0.375)
    assert math.isclose(totals.mean("distinct_cells"), 5.0) and math.isclose(totals.mean("outside"), 0.25)


def test_a_run_made_before_aggregate_is_rebuilt_with_eq1_and_a_new_one_with_its_own_classifier():
    """A config without the key was trained with eq. 1 (settings.LEGACY); one that has it keeps it; train.py's
    default is the features' mean."""
    from attention_sampling.application.settings import TRAINING_DEFAULTS

    config = dict(classes=["a", "b", "c"], scale=4, size=12, patches=3, seed=7)
    assert build_model(config).aggregate == "attention"
    assert build_model(dict(config, aggregate="mean")).aggregate == "mean"
    assert build_model(dict(config, aggregate="attention")).aggregate == "attention"
    assert TRAINING_DEFAULTS["aggregate"] == "mean"


def test_a_run_made_before_attention_init_is_rebuilt_with_its_random_start():
    """A config without the key was trained from the original random start: build_model draws it again,
    the same parameters as a run that asks for "random"; "uniform" differs in the last attention layer only."""
    config = dict(classes=["a", "b", "c"], scale=4, size=12, patches=3, seed=7)
    old, drawn = build_model(config).params, build_model(dict(config, attention_init="random")).params
    uniform = build_model(dict(config, attention_init="uniform")).params
    last = {"attention.9.weight", "attention.9.bias"}
    for key, value in old.items():
        np.testing.assert_array_equal(value, drawn[key])
        if key in last:  # (the drawn bias starts at zero as every bias does; its weight does not)
            assert not uniform[key].any() and (key.endswith("bias") or value.any())
        else:
            np.testing.assert_array_equal(value, uniform[key])


def test_augmentation_follows_the_config_and_old_runs_keep_the_papers():
    assert augmentation({"augment": False, "zoom": 0.2}) is None
    assert augmentation({"augment": True, "contrast": 0.1, "zoom": 0.0}) == Augmentation(contrast=0.1, zoom=0.0)
    # A run made before --contrast and --zoom existed: the strengths it was trained with.
    assert augmentation({"augment": True}) == Augmentation(contrast=0.3, zoom=0.2)
    rng = np.random.default_rng(0)
    assert augmentation({"augment": True, "zoom": 0.0}).draw(rng, 30, 40)[3] == (0, 0, 30, 40)  # no crop


def test_a_flag_typed_on_resuming_an_older_run_is_compared_with_what_it_was_trained_with():
    """A run made before --zoom existed was trained with the paper's 0.2: typing that again resumes it,
    typing 0 is refused (not silently dropped)."""
    run = SimpleNamespace(run_dir="RUN")
    saved = {"epochs": 3, "augment": True}
    assert Trainer._resumed_config(run, {"zoom": 0.2, "epochs": 5}, saved, 3) == {"epochs": 5, "augment": True}
    with pytest.raises(AttentionSamplingError, match="zoom = 0.2, not 0.0"):
        Trainer._resumed_config(run, {"zoom": 0.0}, saved, 3)


def test_the_next_epochs_first_batch_is_read_during_evaluation_and_changes_nothing(tmp_path):
    """The loader reads epoch 2's first batch while epoch 1 is evaluated (its order computed on a copy of the
    training generator), and epoch 2 starts from it; the metrics equal those of a run without the prefetch."""
    from attention_sampling.application.settings import TRAINING_DEFAULTS

    dataset = noise_folder(tmp_path / "data", per_class=6, seed=0)
    config = dict(TRAINING_DEFAULTS, data=str(tmp_path / "data"), classes=dataset.classes, image_shape=[24, 32],
                  epochs=3, patches=3, size=8, scale=4, replicas=2, batch_size=4, seed=3, augment=True)
    histories, taken = [], []
    for prefetch in (True, False):
        with pytest.MonkeyPatch.context() as patch:
            original = Trainer._take_prefetched

            def take(self, batch, original=original, prefetch=prefetch):
                future = original(self, batch)
                taken.append((prefetch, self.epoch, future is not None))
                return future

            patch.setattr(Trainer, "_take_prefetched", take)
            if not prefetch:
                patch.setattr(Trainer, "_prefetch_next_epoch", lambda self: None)
            trainer = Trainer(dataset, str(tmp_path / f"run-{prefetch}"), dict(config), log=lambda line: None,
                              progress=False)
            histories.append([{k: v for k, v in row.items() if k not in ("seconds", "waiting")}
                              for row in trainer.fit()])
    assert [(epoch, used) for prefetch, epoch, used in taken if prefetch] == [(0, False), (1, True), (2, True)]
    assert not any(used for prefetch, _, used in taken if not prefetch)
    assert histories[0] == histories[1]


def test_val_repeats_average_validation_scorings_without_touching_training(tmp_path):
    """--val-repeats K: the validation columns are the means of K scorings, the first the one a run with K = 1
    logs, the others on streams of their own; training and the test column are the same run's."""
    from attention_sampling.application.evaluation import cross_entropy, predict_dataset
    from attention_sampling.application.settings import TRAINING_DEFAULTS, scoring_seed

    dataset = noise_folder(tmp_path / "data", per_class=8, seed=1)
    config = dict(TRAINING_DEFAULTS, data=str(tmp_path / "data"), classes=dataset.classes, image_shape=[24, 32],
                  epochs=2, patches=3, size=8, scale=4, replicas=2, batch_size=4, seed=5, augment=True,
                  val_fraction=0.3, test_fraction=0.2)
    trainers = {}
    for repeats in (1, 3):
        trainers[repeats] = Trainer(dataset, str(tmp_path / f"run-{repeats}"), dict(config, val_repeats=repeats),
                                    log=lambda line: None, progress=False)
        trainers[repeats].fit()
    one, three = (trainers[k].history for k in (1, 3))
    for a, b in zip(one, three):
        for column in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "entropy", "reward"):
            assert a[column] == b[column], column
    trainer = trainers[3]
    indices, labels = trainer.val_indices, dataset.labels[trainer.val_indices]
    seeds = [scoring_seed(config["seed"], 2, repeat) for repeat in range(3)]
    assert len({str(seed) for seed in seeds}) == 3 and seeds[0] == scoring_seed(config["seed"], 2)
    scorings = [predict_dataset(trainer.model, dataset, indices, (24, 32), 4, seed=seed) for seed in seeds]
    accuracies = [float(np.mean(p.argmax(axis=1) == labels)) for p in scorings]
    assert three[-1]["val_accuracy"] == pytest.approx(np.mean(accuracies), abs=1e-12)
    assert three[-1]["val_loss"] == pytest.approx(np.mean([cross_entropy(p, labels) for p in scorings]), abs=1e-12)
    assert one[-1]["val_accuracy"] == pytest.approx(accuracies[0], abs=1e-12)
    assert one[-1]["val_loss"] == pytest.approx(cross_entropy(scorings[0], labels), abs=1e-12)
    # The looks differ from scoring to scoring (else the mean would be one scoring under another name).
    assert not np.array_equal(scorings[0], scorings[1])


def test_weight_average_is_the_mean_of_the_epochs_states_and_changes_no_training(tmp_path):
    """--average-from E: average.npz holds the mean of the model's state (weights and batch-norm statistics)
    after epochs E, E + 1, ...; training and checkpoint.npz are those of a run without it; a run resumed after
    every epoch keeps the same average to the bit."""
    from attention_sampling.application.checkpoint import load_checkpoint
    from attention_sampling.application.settings import TRAINING_DEFAULTS

    dataset = noise_folder(tmp_path / "data", per_class=6, seed=2)
    config = dict(TRAINING_DEFAULTS, data=str(tmp_path / "data"), classes=dataset.classes, image_shape=[24, 32],
                  epochs=4, patches=3, size=8, scale=4, replicas=2, batch_size=4, seed=1, augment=True)
    quiet = dict(log=lambda line: None, progress=False)
    plain = Trainer(dataset, str(tmp_path / "plain"), dict(config), **quiet)
    plain.fit()
    averaged = Trainer(dataset, str(tmp_path / "averaged"), dict(config, average_from=2), **quiet)
    averaged.fit()
    assert not (tmp_path / "plain" / "average.npz").exists()
    drop = ("seconds", "waiting")
    assert ([{k: v for k, v in r.items() if k not in drop} for r in plain.history]
            == [{k: v for k, v in r.items() if k not in drop} for r in averaged.history])
    for key, value in plain.model.state_dict().items():
        np.testing.assert_array_equal(value, averaged.model.state_dict()[key])

    # The same run, one epoch per process, its state recorded after each epoch.
    states = []
    for epoch in range(1, 5):
        settings = dict(config, average_from=2, epochs=1) if epoch == 1 else {"epochs": epoch}
        trainer = Trainer(dataset, str(tmp_path / "stepwise"), settings, resume=epoch > 1, **quiet)
        trainer.fit()
        states.append({key: value.astype(np.float64) for key, value in trainer.model.state_dict().items()})
    average = load_checkpoint(str(tmp_path / "averaged" / "average.npz"))
    assert average["meta"]["epoch"] == 4 and average["meta"]["averaged"] == 3
    stepwise = load_checkpoint(str(tmp_path / "stepwise" / "average.npz"))["model"]
    moved = False
    for key, value in average["model"].items():
        np.testing.assert_array_equal(value, stepwise[key])
        expected = np.mean([state[key] for state in states[1:]], axis=0)
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)
        moved |= not np.allclose(value, states[-1][key])
    assert moved  # the average is not simply the last epoch's state
    assert any(key.startswith("buffers/") for key in average["model"])  # batch-norm statistics are averaged too


def test_the_weight_average_may_move_only_while_it_has_not_begun():
    run = SimpleNamespace(run_dir="RUN")
    saved = {"epochs": 3, "average_from": 5}
    assert Trainer._resumed_config(run, {"average_from": 4, "epochs": 6}, saved, 3)["average_from"] == 4
    assert Trainer._resumed_config(run, {"average_from": 0}, saved, 3)["average_from"] == 0
    # A run made before the setting existed has none: it may take one from an epoch still ahead of it.
    assert Trainer._resumed_config(run, {"average_from": 4}, {"epochs": 3}, 3)["average_from"] == 4
    with pytest.raises(AttentionSamplingError, match="--average-from 3 would change"):
        Trainer._resumed_config(run, {"average_from": 3}, {"epochs": 3}, 3)
    with pytest.raises(AttentionSamplingError, match="from epoch 2 on"):
        Trainer._resumed_config(run, {"average_from": 4}, {"epochs": 3, "average_from": 2}, 3)
