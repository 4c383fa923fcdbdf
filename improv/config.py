"""The one configuration: a dataclass per section, loaded from config.yaml, every value checked.

An unknown key or a bad value raises ConfigError naming the dotted key and what is allowed, e.g.
`sampling.temperature must be > 0, got -1`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from improv.errors import ConfigError
from improv.paths import config_candidates

MODES = ("call-response", "continuous")
BACKENDS = ("auto", "alsa", "jack", "jack-rtmidi", "coremidi", "winmm")


@dataclass
class ModelSection:
    path: str | None = None  # None: the shipped exported_models/improv-lstm.onnx


@dataclass
class MidiSection:
    backend: str = "auto"  # auto: JACK when a JACK server runs, else the system's MIDI
    input: str | None = None  # None: open a virtual input port; else a port name or a unique part of it
    output: str | None = None  # None: open a virtual output port
    client_name: str = "improv"
    input_channels: list[int] | None = None  # 1..16; None listens to all
    output_channel: int = 1  # 1..16
    pass_through: bool = False  # echo the player's notes to the output


@dataclass
class EngineSection:
    mode: str = "call-response"
    enabled: bool = True
    silence_ms: int = 500  # call-response: answer after this much silence with all keys up
    response_ms: int = 6000  # call-response: longest answer
    lookahead_ms: int = 150  # generation runs this far ahead of the clock
    max_gap_ms: int = 2000  # a longer silence is heard by the model as this long


@dataclass
class SamplingSection:
    temperature: float = 0.9
    top_p: float = 0.95
    seed: int | None = None  # None: a different answer every run


@dataclass
class LimitsSection:
    pitch_low: int = 21  # A0
    pitch_high: int = 108  # C8
    max_polyphony: int = 8
    max_note_ms: int = 4000  # hard cap: no improv note lasts longer
    velocity_scale: float = 1.0


@dataclass
class ControlsSection:
    """MIDI CC numbers that change settings live (CC value 0..127 maps onto each range)."""

    temperature: int | None = 21  # 0.1 .. 2.0
    top_p: int | None = 22  # 0.5 .. 1.0
    mode: int | None = 23  # < 64 call-response, >= 64 continuous
    enabled: int | None = 24  # < 64 off, >= 64 on
    response_ms: int | None = 25  # 1 .. 16 s
    pitch_low: int | None = 26  # the CC value is the MIDI pitch
    pitch_high: int | None = 27
    max_polyphony: int | None = 28  # 1 .. 16
    max_note_ms: int | None = 29  # 0.1 .. 8 s
    velocity_scale: int | None = 30  # 0.25 .. 2.0


@dataclass
class RecordingSection:
    enabled: bool = True
    folder: str | None = None  # None: the user's data folder (improv.paths.default_sessions_dir)
    flush_s: float = 5.0  # rewrite the session file this often


@dataclass
class Config:
    model: ModelSection = field(default_factory=ModelSection)
    midi: MidiSection = field(default_factory=MidiSection)
    engine: EngineSection = field(default_factory=EngineSection)
    sampling: SamplingSection = field(default_factory=SamplingSection)
    limits: LimitsSection = field(default_factory=LimitsSection)
    controls: ControlsSection = field(default_factory=ControlsSection)
    recording: RecordingSection = field(default_factory=RecordingSection)

    def validate(self) -> "Config":
        _check_choice("midi.backend", self.midi.backend, BACKENDS)
        _check_choice("engine.mode", self.engine.mode, MODES)
        if self.midi.input_channels is not None:
            for channel in self.midi.input_channels:
                _check_range("midi.input_channels", channel, 1, 16)
        _check_range("midi.output_channel", self.midi.output_channel, 1, 16)
        _check_range("engine.silence_ms", self.engine.silence_ms, 10, 60_000)
        _check_range("engine.response_ms", self.engine.response_ms, 100, 600_000)
        _check_range("engine.lookahead_ms", self.engine.lookahead_ms, 10, 2000)
        _check_range("engine.max_gap_ms", self.engine.max_gap_ms, 10, 60_000)
        _check_positive("sampling.temperature", self.sampling.temperature)
        _check_range("sampling.top_p", self.sampling.top_p, 0.01, 1.0)
        _check_range("limits.pitch_low", self.limits.pitch_low, 0, 127)
        _check_range("limits.pitch_high", self.limits.pitch_high, self.limits.pitch_low, 127)
        _check_range("limits.max_polyphony", self.limits.max_polyphony, 1, 128)
        _check_range("limits.max_note_ms", self.limits.max_note_ms, 10, 600_000)
        _check_range("limits.velocity_scale", self.limits.velocity_scale, 0.01, 10.0)
        for item in fields(ControlsSection):
            value = getattr(self.controls, item.name)
            if value is not None:
                _check_range(f"controls.{item.name}", value, 0, 119)  # 120..127 are channel mode messages
        _check_positive("recording.flush_s", self.recording.flush_s)
        return self


def _check_choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")


def _check_range(key: str, value: Any, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{key} must be in range {low}..{high}, got {value!r}")


def _check_positive(key: str, value: Any) -> None:
    if not value > 0:
        raise ConfigError(f"{key} must be > 0, got {value!r}")


def _coerce(key: str, value: Any, annotation: str) -> Any:
    """Check a YAML value against a field's annotation (a string under postponed evaluation)."""
    optional = "None" in annotation
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key} must not be empty (null); remove the key to use the default")
    if annotation.startswith("bool"):
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if annotation.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be a whole number, got {value!r}")
        return value
    if annotation.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if annotation.startswith("str"):
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be text, got {value!r}")
        return value
    if annotation.startswith("list[int]"):
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ConfigError(f"{key} must be a list of whole numbers, got {value!r}")
        return value
    raise AssertionError(f"no coercion for {annotation}")


def from_dict(raw: dict, source: str = "config") -> Config:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must be a mapping of sections (model, midi, engine, ...), got {type(raw).__name__}")
    config = Config()
    sections = {f.name for f in fields(Config)}
    for section_name, values in raw.items():
        if section_name not in sections:
            raise ConfigError(f"{section_name} is not a config section; allowed: {', '.join(sorted(sections))}")
        section = getattr(config, section_name)
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{section_name} must be a mapping of keys, got {values!r}")
        known = {f.name: f for f in fields(section)}
        for key, value in values.items():
            dotted = f"{section_name}.{key}"
            if key not in known:
                raise ConfigError(f"{dotted} is not a config key; {section_name} has: {', '.join(known)}")
            setattr(section, key, _coerce(dotted, value, str(known[key].type)))
    return config.validate()


def load(path: str | Path | None) -> Config:
    """Config from a YAML file (None: the defaults)."""
    if path is None:
        return Config().validate()
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as err:
        raise ConfigError(f"config file {path} does not exist; pass --config PATH or leave it out for the defaults") from err
    except IsADirectoryError as err:
        raise ConfigError(f"config file {path} is a folder; give the path of a YAML file") from err
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read: {err.strerror or err}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(err)}") from err
    return from_dict(raw, str(path))


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's message, with the line and column where it went wrong (1-based, as editors count)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    if mark is None:
        return problem
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"


def discover(explicit: str | Path | None = None) -> tuple[Config, Path | None]:
    """The config a command uses and the file it came from: --config, else ./config.yaml, else the
    user's config folder, else the defaults (None)."""
    for candidate in config_candidates(explicit):
        if explicit is not None or candidate.is_file():
            return load(candidate), candidate
    return load(None), None


def override(config: Config, dotted: str, value: Any) -> Config:
    """Set one key from a command-line flag, with the same checks as the file."""
    section_name, key = dotted.split(".")
    section = getattr(config, section_name)
    annotation = str({f.name: f for f in fields(section)}[key].type)
    setattr(section, key, _coerce(dotted, value, annotation))
    return config.validate()


def as_dict(config: Config) -> dict:
    return dataclasses.asdict(config)
