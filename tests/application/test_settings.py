"""The typed training settings: read from a run's config once, with what old runs were trained with."""
import json

import pytest
from hypothesis import given, strategies as st

from attention_sampling.application.errors import AttentionSamplingError
from attention_sampling.application.settings import LEGACY, TRAINING_DEFAULTS, Training


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
