import pytest

from improv import config
from improv.errors import ConfigError


def test_defaults_are_valid_and_the_repository_config_yaml_matches_them():
    from pathlib import Path

    assert config.load(None) == config.Config()
    assert config.load(Path(__file__).parent.parent / "config.yaml") == config.Config()


@pytest.mark.parametrize("raw, message", [
    ({"sampling": {"temperature": -1}}, "sampling.temperature must be > 0, got -1"),
    ({"sampling": {"top_p": 1.5}}, "sampling.top_p must be in range"),
    ({"sampling": {"temprature": 1}}, "sampling.temprature is not a config key"),
    ({"engine": {"mode": "duet"}}, "engine.mode must be one of call-response, continuous"),
    ({"engine": {"silence_ms": "soon"}}, "engine.silence_ms must be a whole number"),
    ({"midi": {"output_channel": 17}}, "midi.output_channel must be in range 1..16, got 17"),
    ({"midi": {"input_channels": [0]}}, "midi.input_channels must be in range 1..16"),
    ({"limits": {"pitch_low": 80, "pitch_high": 60}}, "limits.pitch_high must be in range 80..127"),
    ({"recording": {"enabled": "yes"}}, "recording.enabled must be true or false"),
    ({"controls": {"temperature": 123}}, "controls.temperature must be in range 0..119"),
    ({"engines": {}}, "engines is not a config section"),
])
def test_a_bad_value_names_the_dotted_key_and_what_is_allowed(raw, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        config.from_dict(raw)


def test_a_missing_or_broken_file_says_so(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("engine: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(broken)


def test_override_checks_like_the_file():
    cfg = config.Config()
    config.override(cfg, "sampling.temperature", 1.2)
    assert cfg.sampling.temperature == 1.2
    with pytest.raises(ConfigError, match="engine.silence_ms must be in range"):
        config.override(cfg, "engine.silence_ms", 1)


def test_the_config_is_found_where_users_put_it(tmp_path, monkeypatch):
    work, home = tmp_path / "work", tmp_path / "xdg"
    (home / "improv").mkdir(parents=True)
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    assert config.discover() == (config.Config(), None)  # nothing anywhere: the defaults
    user = home / "improv" / "config.yaml"
    user.write_text("engine: {silence_ms: 700}\n")
    found, path = config.discover()
    assert (found.engine.silence_ms, path) == (700, user)
    local = work / "config.yaml"
    local.write_text("engine: {silence_ms: 800}\n")
    found, path = config.discover()
    assert (found.engine.silence_ms, path.resolve()) == (800, local.resolve())
    explicit = tmp_path / "mine.yaml"
    explicit.write_text("engine: {silence_ms: 900}\n")
    found, path = config.discover(explicit)
    assert (found.engine.silence_ms, path) == (900, explicit)


def test_a_yaml_syntax_error_names_its_line_and_column(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("engine:\n  silence_ms: 500\n  mode: 'continuous\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml is not valid YAML: .* at line 4, column 1"):
        config.load(broken)


def documented_settings() -> dict[str, str]:
    """config.yaml's comment for each dotted key, continuation lines included; sections keyed by name."""
    import re
    from pathlib import Path

    comments, section, key = {}, None, None
    for line in (Path(__file__).parent.parent / "config.yaml").read_text().splitlines():
        code, _, comment = line.partition("#")
        if not line.strip():
            continue
        if match := re.match(r"^(\w+):", code):
            section, key = match.group(1), match.group(1)
        elif match := re.match(r"^  (\w+):", code):
            key = f"{section}.{match.group(1)}"
        elif not code.strip() and comment and key is not None:
            comments[key] += " " + comment.strip()
            continue
        if key is not None:
            comments[key] = comment.strip()
    return comments


def number(value) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def test_config_yaml_states_each_range_the_fields_declare():
    comments = documented_settings()
    fields = config.setting_fields()
    sections = {item.name for item in __import__("dataclasses").fields(config.Config)}
    assert set(comments) - sections == set(fields)
    for dotted, item in fields.items():
        rule, text = item.metadata, comments[dotted]
        if dotted.startswith("controls.") and item.name in config.actions():
            continue
        if dotted.startswith("controls."):
            knob = config.rules(config.knobs()[item.name])
            if "knob" in knob:
                low, high = knob["knob"]
                assert f"{item.name} {number(low)}..{number(high)}" in text, (dotted, text)
            continue
        if "low" in rule:
            low = rule["low"] if isinstance(rule["low"], str) else number(rule["low"])
            assert f"{low}..{number(rule['high'])}" in text, (dotted, text)
        if "above" in rule:
            assert f"> {number(rule['above'])}" in text, (dotted, text)
        for choice in rule.get("choices", ()):
            assert choice in text, (dotted, text)
    cc = config.rules("controls.temperature")
    assert f"({cc['low']}..{cc['high']})" in comments["controls"]


def test_every_control_turns_a_setting_that_has_a_knob_or_is_an_action():
    controls = {item.name for item in __import__("dataclasses").fields(config.ControlsSection)}
    assert set(config.knobs()) | set(config.actions()) == controls
    assert config.actions() == ("reset", "answer")


def test_two_settings_on_one_cc_are_refused_naming_both():
    with pytest.raises(ConfigError, match=r"controls\.temperature and controls\.top_p are both mapped to CC 40"):
        config.from_dict({"controls": {"temperature": 40, "top_p": 40}})
