"""The typed training settings: read from a run's config once, with what old runs were trained with."""
import json

import pytest
from hypothesis import given, strategies as st

from attention_sampling.application.errors import AttentionSamplingError
from attention_sampling.application.settings import LEGACY, RESUMABLE, TRAINING_DEFAULTS, Training, learning_rate, resumed


def test_the_defaults_are_the_dataclass_defaults_and_survive_config_json():
    settings = Training()
    assert Training.from_dict(TRAINING_DEFAULTS) == settings
    assert Training.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings  # lists back to tuples


def test_a_setting_a_run_was_made_before_has_the_value_it_was_trained_with():
    config = {key: value for key, value in TRAINING_DEFAULTS.items() if key not in LEGACY}
    settings = Training.from_dict(config)
    for key, value in LEGACY.items():
        assert getattr(settings, key) == value
    assert settings.patches == TRAINING_DEFAULTS["patches"]


@given(patches=st.integers(1, 100), lr=st.one_of(st.integers(1, 3), st.floats(1e-6, 1.0)),
       drops=st.lists(st.integers(1, 300), max_size=3))
def test_json_values_are_typed(patches, lr, drops):
    settings = Training.from_dict(dict(TRAINING_DEFAULTS, patches=patches, lr=lr, lr_drops=drops))
    assert (settings.patches, settings.lr, settings.lr_drops) == (patches, float(lr), tuple(drops))
    assert isinstance(settings.lr, float) and isinstance(settings.lr_drops, tuple)


@pytest.mark.parametrize("key, value", [("patches", "20"), ("patches", 2.5), ("patches", True), ("lr", "fast"),
                                        ("border", 0), ("lr_drops", [1.5]), ("lr_drops", 3)])
def test_a_mistyped_value_is_a_one_line_error_naming_the_file_and_the_setting(key, value):
    with pytest.raises(AttentionSamplingError) as error:
        Training.from_dict(dict(TRAINING_DEFAULTS, **{key: value}), source="runs/x/config.json")
    message = str(error.value)
    assert message.startswith("runs/x/config.json: ") and key in message and "\n" not in message


def test_the_settings_cannot_be_changed_once_read():
    with pytest.raises(AttributeError):
        Training().patches = 3


# ----------------------------------------------------------------------------- resuming a run

epoch_counts = st.integers(0, 8)
schedules = st.lists(st.integers(1, 10), max_size=4).map(sorted)  # train.py and paper-table sort --lr-drops
average_starts = st.integers(0, 10)  # 0: no average
# Every setting a resumed run keeps, with a value other than the default.
kept_settings = st.sampled_from([(key, value) for key, value in
                                 dict(patches=3, size=7, scale=2, batch_size=2, replicas=1, lr=0.5, entropy=0.2,
                                      temperature=1.5, border="zero", floor=0.1, attention_init="uniform",
                                      attention_padding="zero", seed=9, test_fraction=0.3, val_fraction=0.3,
                                      val_repeats=3, estimator="expectation", sampling="without",
                                      aggregate="attention", contrast=0.1, zoom=0.0, tissue="auto").items()])


def saved_run(**settings):
    return dict(Training().to_dict(), classes=["a", "b"], epochs=3, augment=True, **settings)


def averaged(start, trained):
    """The epochs among the first `trained` whose weights are in an average begun at epoch `start` (0: none)."""
    return [epoch for epoch in range(1, trained + 1) if 0 < start <= epoch]


@given(before=schedules, drops=schedules, started=epoch_counts)
def test_resuming_takes_new_drops_exactly_when_the_trained_epochs_keep_their_learning_rates(before, drops, started):
    kept = all(learning_rate(1.0, drops, epoch) == learning_rate(1.0, before, epoch) for epoch in range(1, started + 1))
    if kept:
        assert resumed(saved_run(lr_drops=before), {"lr_drops": drops}, started)["lr_drops"] == drops
    else:
        with pytest.raises(AttentionSamplingError, match="--lr-drops .* would change them") as error:
            resumed(saved_run(lr_drops=before), {"lr_drops": drops}, started)
        assert "\n" not in str(error.value)


@given(before=average_starts, start=average_starts, started=epoch_counts)
def test_resuming_moves_the_average_exactly_when_no_trained_epoch_is_in_either(before, start, started):
    if averaged(start, started) == averaged(before, started):
        assert resumed(saved_run(average_from=before), {"average_from": start}, started)["average_from"] == start
    else:
        with pytest.raises(AttentionSamplingError, match=f"--average-from {start} would change"):
            resumed(saved_run(average_from=before), {"average_from": start}, started)


@given(setting=kept_settings, started=epoch_counts, epochs=st.integers(1, 20))
def test_resuming_keeps_every_other_setting_and_names_its_flag(setting, started, epochs):
    key, value = setting
    saved = saved_run()
    # The run's own value, typed again, changes nothing; its length may change.
    assert resumed(saved, {key: saved[key], "epochs": epochs}, started) == dict(saved, epochs=epochs)
    with pytest.raises(AttentionSamplingError, match=f"{key} = .*, not .* \\(--{key.replace('_', '-')}\\)") as error:
        resumed(saved, {key: value, "epochs": epochs}, started)
    assert "\n" not in str(error.value)


@given(setting=kept_settings, started=epoch_counts)
def test_a_run_made_before_a_setting_existed_is_compared_with_what_it_was_trained_with(setting, started):
    key, _ = setting
    saved = {name: value for name, value in saved_run().items() if name != key}
    if key in LEGACY:
        assert resumed(saved, {key: LEGACY[key]}, started) == saved
    else:  # a setting every run stores: asked of a partial config, nothing to compare it with
        assert resumed(saved, {key: TRAINING_DEFAULTS[key]}, started) == saved


def test_the_settings_a_run_may_always_change_are_its_length_and_what_counts_as_data():
    saved = saved_run(bad_images="stop", max_pixels=10)
    asked = {"epochs": 9, "bad_images": "skip", "max_pixels": 20}
    assert set(asked) == set(RESUMABLE)
    assert resumed(saved, asked, 3) == dict(saved, **asked)


def test_other_images_or_classes_are_refused_naming_the_data():
    saved = saved_run(image_list={"count": 12, "digest": "x"})
    with pytest.raises(AttentionSamplingError, match=r"other images .*\(12 then, 11 now\)"):
        resumed(saved, {"image_list": {"count": 11, "digest": "y"}}, 1)
    with pytest.raises(AttentionSamplingError, match="the data's classes"):
        resumed(saved, {"classes": ["a", "c"]}, 1)


def test_the_training_flags_are_the_settings_and_take_a_callers_defaults():
    """application.cli.add_training_flags: one flag per setting (and --epochs, --no-augment), TRAINING_DEFAULTS'
    default unless the caller gives its own, shown in the help unless the caller words it."""
    import argparse

    from attention_sampling.application.cli import TRAINING_FLAGS, add_training_flags

    assert set(TRAINING_FLAGS) == {field for field in Training().to_dict()} | {"epochs", "no_augment"}
    parser = argparse.ArgumentParser()
    add_training_flags(parser, ("patches", "lr", "entropy", "no_augment"), dict(patches=3), dict(lr="default 1e-3"))
    assert vars(parser.parse_args([])) == dict(patches=3, lr=TRAINING_DEFAULTS["lr"],
                                               entropy=TRAINING_DEFAULTS["entropy"], no_augment=False)
    assert vars(parser.parse_args(["--entropy", "0", "--no-augment"]))["entropy"] == 0.0
    help_text = " ".join(parser.format_help().split())
    assert "(default 3)" in help_text and "(default 1e-3)" in help_text
    assert f"(default {TRAINING_DEFAULTS['entropy']})" in help_text
    with pytest.raises(SystemExit):
        parser.parse_args(["--entropy", "-1"])
