from improv.config import Config
from improv.controls import apply_control


def test_mapped_controllers_change_settings_within_their_ranges():
    config = Config()
    assert apply_control(config, 21, 0) == ("sampling.temperature", 0.1)
    assert apply_control(config, 21, 127) == ("sampling.temperature", 2.0)
    assert apply_control(config, 23, 100) == ("engine.mode", "continuous")
    assert apply_control(config, 24, 10) == ("engine.enabled", False)
    assert apply_control(config, 28, 127) == ("limits.max_polyphony", 16)
    assert apply_control(config, 7, 100) is None  # volume: not improv's
    config.validate()


def test_the_pitch_range_never_turns_empty():
    config = Config()
    apply_control(config, 26, 90)  # lowest note above the highest
    apply_control(config, 27, 40)  # then the highest below the lowest
    assert config.limits.pitch_low <= config.limits.pitch_high == 40
    config.validate()


def test_unmapped_controls_in_config_are_ignored():
    config = Config()
    config.controls.temperature = None
    assert apply_control(config, 21, 64) is None
