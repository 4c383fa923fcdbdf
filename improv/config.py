"""The one configuration: a dataclass per section, loaded from config.yaml, every value checked.

An unknown key or a bad value raises ConfigError naming the dotted key and what is allowed, e.g.
`sampling.temperature must be > 0, got -1`.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import yaml

from improv.clock import DIVISIONS, parse_meter
from improv.errors import ConfigError
from improv.key import parse_key
from improv.memory import MAX_CONTEXTS
from improv.midi.messages import FIRST_CHANNEL_MODE_CC
from improv.paths import config_candidates

MODES = ("call-response", "continuous")
SYNCS = ("internal", "midi-clock", "link")
GRIDS = ("off", *DIVISIONS)
START_ON = ("free", "beat", "bar")
LOOKAHEAD_MAX_MS = 2000
# Style guidance: from 2 up, three of the shipped model's four styles steer its continuations nearest
# their own pieces, and 2 costs its answers 0.08 bits/token where 4 costs 0.62 (docs/development.md,
# "Styles"); 1 is the model as trained.
DEFAULT_STYLE_STRENGTH = 2.0
MIN_OFFSET_MARGIN_MS = 10  # a negative output offset stays this far inside the lookahead
BACKENDS = ("auto", "alsa", "jack", "jack-rtmidi", "coremidi", "winmm")


def setting(default: Any, *, low: float | str | None = None, high: float | None = None, above: float | None = None,
            choices: tuple | None = None, knob: tuple[float, float] | None = None,
            knob_values: tuple | None = None, action: bool = False, check: Any = None,
            control: str | None = None) -> Any:
    """A config field and everything allowed for it, declared once: `low`..`high` inclusive (`low`
    may name a sibling field), `above` an exclusive lower bound, `choices` the allowed values. A
    setting a MIDI CC can turn has `knob`, the span the CC's value 0..127 sweeps, or `knob_values`,
    values the CC's range is split evenly between. A control with `action` does something when its
    CC comes (any value) instead of turning a setting. `check(value, section)` raises ValueError for
    a value a range cannot describe (a key name). `control` names the setting's `controls.*` entry
    when it is not the field's own name (key.strength: controls.key_strength)."""
    rules = {"low": low, "high": high, "above": above, "choices": choices, "knob": knob, "knob_values": knob_values,
             "action": action or None, "check": check, "control": control}
    return field(default=default, metadata={k: v for k, v in rules.items() if v is not None})


@dataclass
class ModelSection:
    path: str | None = None  # None: the shipped model (improv.model.default_model_path)
    folder: str | None = None  # models a Program Change picks, in name order from program 0; None: one model
    # A style of the model (its metadata lists them; improv models shows them), fed after START; None or
    # "none": no style token. Checked against the model when it loads, not here. Its CC sweeps none and
    # the model's styles (improv.controls); a change takes effect at the next answer.
    style: str | None = setting(None, knob_values=("none", "the model's styles"))
    # How strongly the style steers (improv.guidance): 0 ignores it, 1 is the model as trained, more
    # moves further along the difference the style makes. Read at every token: a turn of its CC is heard at once.
    style_strength: float = setting(DEFAULT_STYLE_STRENGTH, low=0.0, high=16.0, knob=(0.0, 12.0))
    loaded_styles: ClassVar[tuple[str, ...]] = ()  # the loaded model's styles (set by the engine): the CC's values


@dataclass
class MidiSection:
    backend: str = setting("auto", choices=BACKENDS)  # auto: JACK when a JACK server runs, else the system's MIDI
    input: str | list[str] | None = None  # None: open a virtual input port; else port names or unique parts
    output: str | None = None  # None: open a virtual output port
    client_name: str = "improv"
    input_channels: list[int] | None = setting(None, low=1, high=16)  # None listens to all
    output_channel: int = setting(1, low=1, high=16)
    pass_through: bool = False  # echo the player's notes to the output
    feedback_guard_ms: int = setting(30, low=0, high=1000)  # improv's own notes coming back within this: ignored
    # improv's notes leave this much after their due time; negative: before, down to engine.lookahead_ms less 10
    output_offset_ms: int = setting(0, low=-(LOOKAHEAD_MAX_MS - MIN_OFFSET_MARGIN_MS), high=1000)


@dataclass
class EngineSection:
    mode: str = setting("call-response", choices=MODES, knob_values=MODES)
    enabled: bool = setting(True, knob_values=(False, True))
    silence_ms: int = setting(500, low=10, high=60_000)  # call-response: answer after this much silence
    response_ms: int = setting(6000, low=100, high=600_000, knob=(1000, 16_000))  # longest answer
    lookahead_ms: int = setting(150, low=10, high=LOOKAHEAD_MAX_MS)  # generation runs this far ahead of the clock
    max_gap_ms: int = setting(2000, low=10, high=60_000)  # a longer silence is heard by the model as this long


@dataclass
class SamplingSection:
    temperature: float = setting(0.9, above=0, knob=(0.1, 2.0))
    top_p: float = setting(0.95, low=0.01, high=1.0, knob=(0.5, 1.0))
    seed: int | None = None  # None: a different answer every run


@dataclass
class LimitsSection:
    pitch_low: int = setting(21, low=0, high=127, knob=(0, 127))  # A0
    pitch_high: int = setting(108, low="pitch_low", high=127, knob=(0, 127))  # C8
    max_polyphony: int = setting(8, low=1, high=128, knob=(1, 16))
    max_note_ms: int = setting(4000, low=10, high=600_000, knob=(100, 8000))  # hard cap on an improv note
    velocity_scale: float = setting(1.0, low=0.01, high=10.0, knob=(0.25, 2.0))


LAST_KNOB_CC = FIRST_CHANNEL_MODE_CC - 1  # CC 120..127 are channel mode messages (panic among them)


@dataclass
class ControlsSection:
    """MIDI CC numbers that change settings live: each field names the setting it turns (its `knob`),
    or, marked `action`, what the CC does."""

    temperature: int | None = setting(21, low=0, high=LAST_KNOB_CC)
    top_p: int | None = setting(22, low=0, high=LAST_KNOB_CC)
    mode: int | None = setting(23, low=0, high=LAST_KNOB_CC)
    enabled: int | None = setting(24, low=0, high=LAST_KNOB_CC)
    response_ms: int | None = setting(25, low=0, high=LAST_KNOB_CC)
    pitch_low: int | None = setting(26, low=0, high=LAST_KNOB_CC)
    pitch_high: int | None = setting(27, low=0, high=LAST_KNOB_CC)
    max_polyphony: int | None = setting(28, low=0, high=LAST_KNOB_CC)
    max_note_ms: int | None = setting(29, low=0, high=LAST_KNOB_CC)
    velocity_scale: int | None = setting(30, low=0, high=LAST_KNOB_CC)
    attachment: int | None = setting(31, low=0, high=LAST_KNOB_CC)
    # CCs no instrument defines: 32-63 are the low halves of 0-31 (32 comes with every bank change, 33
    # with a 14-bit mod wheel), so the controls keep out of them.
    key_strength: int | None = setting(14, low=0, high=LAST_KNOB_CC)
    bpm: int | None = setting(15, low=0, high=LAST_KNOB_CC)
    swing: int | None = setting(20, low=0, high=LAST_KNOB_CC)
    reset: int | None = setting(102, low=0, high=LAST_KNOB_CC, action=True)  # a new piece: forget the session
    answer: int | None = setting(103, low=0, high=LAST_KNOB_CC, action=True)  # answer now, without the silence
    style: int | None = setting(104, low=0, high=LAST_KNOB_CC)  # model.style: none, then each of the model's styles
    style_strength: int | None = setting(105, low=0, high=LAST_KNOB_CC)


@dataclass
class MemorySection:
    """The session memory (improv.memory): what the player played, learned live."""

    attachment: float = setting(0.5, low=0.0, high=1.0, knob=(0.0, 1.0))  # 0: the LSTM alone
    learn_own: bool = False  # also learn improv's own notes that were sent (it can feed on itself)
    max_contexts: int = setting(MAX_CONTEXTS, low=1000, high=10_000_000)  # least recently heard forgotten past this


def _check_key_name(value: str, section) -> None:
    parse_key(value, section.pitch_classes)


@dataclass
class KeySection:
    """The key improv plays in (improv.key)."""

    name: str = setting("none", check=_check_key_name)  # C:major, A:minor, D:dorian, custom, auto, none
    strength: float = setting(1.0, low=0.0, high=1.0, knob=(0.0, 1.0), control="key_strength")
    pitch_classes: list[int] | None = setting(None, low=0, high=11)  # name custom: the pitch classes (0 = C)


def _check_meter(value: str, section) -> None:
    parse_meter(value)


@dataclass
class TimeSection:
    """The session's time (improv.clock): whose tempo improv follows, and how its notes sit on it."""

    sync: str = setting("internal", choices=SYNCS)  # internal: time.bpm; midi-clock: the input's clock; link
    bpm: float = setting(120.0, low=20.0, high=400.0, knob=(40.0, 240.0))  # the internal tempo
    follow_player: bool = False  # internal: the tempo heard in the player's notes, time.bpm until one is heard
    clock_input: str | None = None  # midi-clock from this port (name or unique part); None: the player's input
    meter: str = setting("4/4", check=_check_meter)  # the time signature: bars for response_bars and start_on
    grid: str = setting("off", choices=GRIDS)  # improv's onsets are pulled toward this grid
    swing: float = setting(0.0, low=0.0, high=0.75, knob=(0.0, 0.75))  # every second grid line this much later
    grid_strength: float = setting(1.0, low=0.0, high=1.0)  # 0 free, 1 on the grid
    response_bars: int | None = setting(None, low=1, high=256)  # with a tempo: answers last this many whole bars
    start_on: str = setting("free", choices=START_ON)  # with a tempo: an answer starts on the next beat or bar

    def in_time(self) -> bool:
        """improv plays to a tempo: the session's (clock, Link), or its own with a grid or bars."""
        return self.sync != "internal" or self.grid != "off" or self.start_on != "free" or self.response_bars is not None


@dataclass
class RecordingSection:
    enabled: bool = True
    folder: str | None = None  # None: the user's data folder (improv.paths.default_sessions_dir)
    flush_s: float = setting(5.0, above=0)  # rewrite the session file this often


@dataclass
class Config:
    model: ModelSection = field(default_factory=ModelSection)
    midi: MidiSection = field(default_factory=MidiSection)
    engine: EngineSection = field(default_factory=EngineSection)
    sampling: SamplingSection = field(default_factory=SamplingSection)
    limits: LimitsSection = field(default_factory=LimitsSection)
    controls: ControlsSection = field(default_factory=ControlsSection)
    memory: MemorySection = field(default_factory=MemorySection)
    key: KeySection = field(default_factory=KeySection)
    time: TimeSection = field(default_factory=TimeSection)
    recording: RecordingSection = field(default_factory=RecordingSection)

    def validate(self) -> "Config":
        for dotted, item in setting_fields().items():
            section = getattr(self, dotted.split(".")[0])
            _check(dotted, getattr(section, item.name), item.metadata, section)
        _check_controls_distinct(self.controls)
        earliest = MIN_OFFSET_MARGIN_MS - self.engine.lookahead_ms
        if self.midi.output_offset_ms < earliest:
            raise ConfigError(f"midi.output_offset_ms must be in range {earliest}..1000 with engine.lookahead_ms "
                              f"{self.engine.lookahead_ms} (notes are sent at most the lookahead less "
                              f"{MIN_OFFSET_MARGIN_MS} ms early), got {self.midi.output_offset_ms}")
        return self


@functools.cache
def setting_fields() -> dict[str, dataclasses.Field]:
    """Every setting's field by dotted key ("sampling.temperature"), in the order config.yaml has them."""
    return {f"{section.name}.{item.name}": item
            for section in fields(Config) for item in fields(section.default_factory)}


def rules(dotted: str) -> dict:
    """What is allowed for a setting, as declared on its field: low, high, above, choices, knob."""
    return dict(setting_fields()[dotted].metadata)


@functools.cache
def actions() -> tuple[str, ...]:
    """The controls that act instead of turning a setting."""
    return tuple(item.name for item in fields(ControlsSection) if item.metadata.get("action"))


@functools.cache
def knobs() -> dict[str, str]:
    """Setting name -> dotted key, for every setting a MIDI CC can turn."""
    return {item.metadata.get("control", item.name): dotted for dotted, item in setting_fields().items()
            if "knob" in item.metadata or "knob_values" in item.metadata}


def _check(key: str, value: Any, rule, section) -> None:
    if value is None:
        return  # optional settings: None is checked by _coerce, which knows the annotation
    if "check" in rule:
        try:
            rule["check"](value, section)
        except ValueError as err:
            raise ConfigError(f"{key}: {err}") from err
    for single in value if isinstance(value, list) else [value]:
        if "choices" in rule:
            _check_choice(key, single, rule["choices"])
        if "above" in rule and not single > rule["above"]:
            raise ConfigError(f"{key} must be > {rule['above']}, got {single!r}")
        if "low" in rule or "high" in rule:
            low = rule.get("low")
            low = getattr(section, low) if isinstance(low, str) else low
            _check_range(key, single, low, rule.get("high"))


def _check_controls_distinct(controls: ControlsSection) -> None:
    """Two settings on one CC would both move at once: name both, so the user can move one."""
    seen: dict[int, str] = {}
    for item in fields(controls):
        cc = getattr(controls, item.name)
        if cc is None:
            continue
        if cc in seen:
            raise ConfigError(f"controls.{seen[cc]} and controls.{item.name} are both mapped to CC {cc}; give each "
                              f"its own CC, or null to leave one unmapped")
        seen[cc] = item.name


def _check_choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")


def _check_range(key: str, value: Any, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{key} must be in range {low}..{high}, got {value!r}")


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
    if annotation.startswith("str | list[str]"):
        if isinstance(value, str) or (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
            return value
        raise ConfigError(f"{key} must be a port name or a list of port names, got {value!r}")
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
            if value is False and "off" in known[key].metadata.get("choices", ()):
                value = "off"  # YAML 1.1 reads an unquoted off as false
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
