"""The event vocabulary and its codec: one definition shared by training and runtime.

Performance-RNN style tokens: NOTE_ON p, NOTE_OFF p, TIME_SHIFT (10 ms steps up to 1 s),
VELOCITY bins, plus a few specials. The layout is a data table (`Vocabulary.groups`); the model
file carries it as JSON and the runtime rebuilds its codec from that, refusing a spec it cannot serve.

Pure: imports neither mido nor onnxruntime. Messages are duck-typed (`.type`, `.note`, `.velocity`,
`.control`, `.value`, `.channel`), which mido messages satisfy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple

from improv.errors import ModelSpecError
from improv.midi.messages import CC_SUSTAIN, DRUM_CHANNEL, SUSTAIN_DOWN_MIN

SPEC_VERSION = 1
NUM_PITCHES = 128


@dataclass(frozen=True)
class Vocabulary:
    """Token layout: specials, NOTE_ON[128], NOTE_OFF[128], TIME_SHIFT[n], VELOCITY[bins], then STYLE[styles].

    Style tokens (one per family of the training data, named in `styles`) come last, so a vocabulary
    with styles keeps every other token's id. A style token is fed right after START and is never
    generated; a vocabulary without styles has no STYLE group at all (the layout of models before styles).
    """

    time_step_ms: int = 10
    time_shift_steps: int = 100
    velocity_bins: int = 32
    specials: tuple[str, ...] = ("PAD", "START")
    styles: tuple[str, ...] = ()
    groups: tuple[tuple[str, int, int], ...] = field(init=False)  # (name, offset, size)

    def __post_init__(self) -> None:
        object.__setattr__(self, "styles", tuple(self.styles))
        if len(set(self.styles)) != len(self.styles) or any(not s or not isinstance(s, str) for s in self.styles):
            raise ModelSpecError(f"style names must be distinct, non-empty strings: {list(self.styles)}")
        sizes = [(name, 1) for name in self.specials] + [
            ("NOTE_ON", NUM_PITCHES),
            ("NOTE_OFF", NUM_PITCHES),
            ("TIME_SHIFT", self.time_shift_steps),
            ("VELOCITY", self.velocity_bins),
        ] + ([("STYLE", len(self.styles))] if self.styles else [])
        groups, offset = [], 0
        for name, size in sizes:
            groups.append((name, offset, size))
            offset += size
        object.__setattr__(self, "groups", tuple(groups))

    # -- layout ---------------------------------------------------------------------------
    @property
    def size(self) -> int:
        name, offset, size = self.groups[-1]
        return offset + size

    def offset(self, group: str) -> int:
        for name, offset, _ in self.groups:
            if name == group:
                return offset
        raise KeyError(group)

    def group_size(self, group: str) -> int:
        for name, _, size in self.groups:
            if name == group:
                return size
        raise KeyError(group)

    def special(self, name: str) -> int:
        return self.offset(name)

    def note_on(self, pitch: int) -> int:
        return self.offset("NOTE_ON") + pitch

    def note_off(self, pitch: int) -> int:
        return self.offset("NOTE_OFF") + pitch

    def time_shift(self, steps: int) -> int:
        """Token for a shift of `steps` time steps, 1..time_shift_steps."""
        assert 1 <= steps <= self.time_shift_steps, steps
        return self.offset("TIME_SHIFT") + steps - 1

    def velocity(self, bin_index: int) -> int:
        return self.offset("VELOCITY") + bin_index

    def style(self, name: str) -> int:
        """The token of a style by name; one clear error naming the allowed ones otherwise."""
        if name not in self.styles:
            if not self.styles:
                raise ModelSpecError(f"unknown style {name!r}: this model has no styles (leave model.style unset)")
            raise ModelSpecError(f"unknown style {name!r}; this model's styles: {', '.join(self.styles)}")
        return self.offset("STYLE") + self.styles.index(name)

    def is_style(self, token: int) -> bool:
        return bool(self.styles) and self.offset("STYLE") <= token < self.size

    def context_start(self, style: str | None = None) -> list[int]:
        """The tokens a context begins with: START, then the style's token when one is chosen."""
        return [self.special("START")] + ([self.style(style)] if style is not None else [])

    def decode_token(self, token: int) -> tuple[str, int]:
        """(group, value): pitch for notes, steps (1-based) for shifts, bin for velocity."""
        for name, offset, size in self.groups:
            if offset <= token < offset + size:
                value = token - offset
                return name, value + 1 if name == "TIME_SHIFT" else value
        raise ValueError(f"token {token} is outside the vocabulary of size {self.size}")

    def name(self, token: int) -> str:
        group, value = self.decode_token(token)
        if group == "STYLE":
            return f"STYLE_{self.styles[value]}"
        return group if group in self.specials else f"{group}_{value}"

    def token_from_name(self, name: str) -> int:
        if name in self.specials:
            return self.special(name)
        if name.startswith("STYLE_"):
            return self.style(name.removeprefix("STYLE_"))
        group, _, value = name.rpartition("_")
        if group == "TIME_SHIFT":
            return self.time_shift(int(value))
        return self.offset(group) + int(value)

    # -- velocity ---------------------------------------------------------------------------
    def velocity_to_bin(self, velocity: int) -> int:
        """MIDI velocity 1..127 to a bin; bins split 1..127 evenly."""
        velocity = min(max(int(velocity), 1), 127)
        return (velocity - 1) * self.velocity_bins // 127

    def bin_to_velocity(self, bin_index: int) -> int:
        """Centre of the bin, so a round trip lands within one bin."""
        low = -(-bin_index * 127 // self.velocity_bins) + 1
        high = -(-(bin_index + 1) * 127 // self.velocity_bins)
        return (low + high) // 2

    # -- the spec carried in the model file -----------------------------------------------
    def to_json(self) -> str:
        spec = {
            "version": SPEC_VERSION,
            "time_step_ms": self.time_step_ms,
            "time_shift_steps": self.time_shift_steps,
            "velocity_bins": self.velocity_bins,
            "specials": list(self.specials),
            "groups": [list(g) for g in self.groups],
        }
        if self.styles:  # a model without styles keeps the spec it always had
            spec["styles"] = list(self.styles)
        return json.dumps(spec)

    @classmethod
    def from_json(cls, text: str) -> "Vocabulary":
        """Rebuild from a model's spec; raise ModelSpecError saying what differs if unservable."""
        try:
            spec = json.loads(text)
            vocab = cls(
                time_step_ms=int(spec["time_step_ms"]),
                time_shift_steps=int(spec["time_shift_steps"]),
                velocity_bins=int(spec["velocity_bins"]),
                specials=tuple(spec["specials"]),
                styles=tuple(str(name) for name in spec.get("styles", ())),
            )
            version, groups = spec["version"], [tuple(g) for g in spec["groups"]]
        except (ValueError, KeyError, TypeError) as err:
            raise ModelSpecError(f"the vocabulary spec is not valid JSON of the expected form: {err}") from err
        if version != SPEC_VERSION:
            raise ModelSpecError(f"vocabulary spec version {version}; this improv serves version {SPEC_VERSION}")
        if groups != list(vocab.groups):
            raise ModelSpecError(
                f"vocabulary layout {groups} differs from the layout this improv builds "
                f"from the same parameters {list(vocab.groups)}"
            )
        for name in ("START",):
            if name not in vocab.specials:
                raise ModelSpecError(f"vocabulary has no {name} token; improv needs one to begin a context")
        if not 1 <= vocab.time_step_ms <= 100 or vocab.velocity_bins < 1 or vocab.time_shift_steps < 1:
            raise ModelSpecError(
                f"vocabulary time_step_ms={vocab.time_step_ms}, time_shift_steps={vocab.time_shift_steps}, "
                f"velocity_bins={vocab.velocity_bins} are outside what improv serves"
            )
        return vocab


class NoteEvent(NamedTuple):
    """A timed note message: velocity 0 means note-off."""

    time_s: float
    pitch: int
    velocity: int

    @property
    def is_on(self) -> bool:
        return self.velocity > 0


class Encoder:
    """Timestamped MIDI messages in, tokens out, one message at a time.

    Times are quantised to the vocabulary's grid against an absolute origin, so rounding never
    accumulates. Channels are merged; drums (channel 10) are ignored; note-on with velocity 0 is
    a note-off; while the sustain pedal is down, note-offs are held and emitted when it lifts.
    A VELOCITY token is emitted only when the bin changes. `max_shift_s` caps a silence (live use:
    a minute of nothing need not cost sixty tokens); None keeps every gap exact.
    """

    def __init__(self, vocab: Vocabulary, origin_s: float = 0.0, max_shift_s: float | None = None):
        self.vocab = vocab
        self.step_s = vocab.time_step_ms / 1000.0
        self.origin_s = origin_s
        self.max_shift_steps = None if max_shift_s is None else max(1, round(max_shift_s / self.step_s))
        self.cursor_steps = 0  # grid position of the last emitted token
        self.velocity_bin: int | None = None
        self.sounding: set[int] = set()
        self.pedal_down = False
        self.pedal_held: set[int] = set()  # keys up, still sounding under the pedal

    def copy(self) -> "Encoder":
        clone = Encoder.__new__(Encoder)
        clone.__dict__.update(self.__dict__)
        clone.sounding, clone.pedal_held = set(self.sounding), set(self.pedal_held)
        return clone

    @property
    def cursor_s(self) -> float:
        return self.origin_s + self.cursor_steps * self.step_s

    def advance_to(self, time_s: float) -> list[int]:
        """TIME_SHIFT tokens that bring the cursor to `time_s` (never backwards)."""
        target = round((time_s - self.origin_s) / self.step_s)
        gap = target - self.cursor_steps
        if gap <= 0:
            return []
        if self.max_shift_steps is not None and gap > self.max_shift_steps:
            # Re-anchor: the silence is heard as max_shift_s, later times stay exact.
            self.origin_s += (gap - self.max_shift_steps) * self.step_s
            gap = self.max_shift_steps
        self.cursor_steps += gap
        tokens, top = [], self.vocab.time_shift_steps
        while gap > 0:
            step = min(gap, top)
            tokens.append(self.vocab.time_shift(step))
            gap -= step
        return tokens

    def note_on(self, time_s: float, pitch: int, velocity: int) -> list[int]:
        if velocity <= 0:
            return self.note_off(time_s, pitch)
        tokens = self.advance_to(time_s)
        if pitch in self.sounding:  # re-strike: the old note ends where the new one starts
            tokens.append(self.vocab.note_off(pitch))
            self.pedal_held.discard(pitch)
        velocity_bin = self.vocab.velocity_to_bin(velocity)
        if velocity_bin != self.velocity_bin:
            tokens.append(self.vocab.velocity(velocity_bin))
            self.velocity_bin = velocity_bin
        tokens.append(self.vocab.note_on(pitch))
        self.sounding.add(pitch)
        return tokens

    def note_off(self, time_s: float, pitch: int) -> list[int]:
        if pitch not in self.sounding:
            return []
        if self.pedal_down:
            self.pedal_held.add(pitch)
            return []
        tokens = self.advance_to(time_s)
        tokens.append(self.vocab.note_off(pitch))
        self.sounding.discard(pitch)
        return tokens

    def sustain(self, time_s: float, down: bool) -> list[int]:
        self.pedal_down = down
        if down or not self.pedal_held:
            return []
        held, self.pedal_held = sorted(self.pedal_held), set()
        tokens: list[int] = []
        for pitch in held:
            tokens += self.note_off(time_s, pitch)
        return tokens

    def release_all(self, time_s: float) -> list[int]:
        """NOTE_OFF for every sounding note (panic, end of input), pedal included."""
        self.pedal_down, self.pedal_held = False, set()
        tokens: list[int] = []
        for pitch in sorted(self.sounding):
            tokens += self.note_off(time_s, pitch)
        return tokens

    def absorb(self, token: int) -> None:
        """Follow a token that was not encoded here (one the model generated): the context now
        includes it, so later times, velocities and note-offs are encoded relative to it."""
        group, value = self.vocab.decode_token(int(token))
        if group == "TIME_SHIFT":
            self.cursor_steps += value
        elif group == "VELOCITY":
            self.velocity_bin = value
        elif group == "NOTE_ON":
            self.sounding.add(value)
        elif group == "NOTE_OFF":
            self.sounding.discard(value)
            self.pedal_held.discard(value)

    def feed(self, time_s: float, msg) -> list[int]:
        """Tokens for one message; what the vocabulary does not model yields []."""
        kind = getattr(msg, "type", None)
        if getattr(msg, "channel", 0) == DRUM_CHANNEL and kind in ("note_on", "note_off"):
            return []
        if kind == "note_on":
            return self.note_on(time_s, msg.note, msg.velocity)
        if kind == "note_off":
            return self.note_off(time_s, msg.note)
        if kind == "control_change" and msg.control == CC_SUSTAIN:
            return self.sustain(time_s, msg.value >= SUSTAIN_DOWN_MIN)
        return []


class Decoder:
    """Tokens in, timed note events out.

    A NOTE_OFF for a note not sounding is dropped; a NOTE_ON for a sounding note re-strikes it
    (note-off then note-on at the same time). Velocity before any VELOCITY token is `default_velocity`.
    """

    def __init__(self, vocab: Vocabulary, origin_s: float = 0.0, default_velocity: int = 80):
        self.vocab = vocab
        self.step_s = vocab.time_step_ms / 1000.0
        self.origin_s = origin_s
        self.cursor_steps = 0
        self.velocity = default_velocity
        self.sounding: dict[int, float] = {}  # pitch -> onset time_s
        self._on, self._off = vocab.offset("NOTE_ON"), vocab.offset("NOTE_OFF")
        self._shift, self._vel = vocab.offset("TIME_SHIFT"), vocab.offset("VELOCITY")

    def copy(self) -> "Decoder":
        clone = Decoder.__new__(Decoder)
        clone.__dict__.update(self.__dict__)
        clone.sounding = dict(self.sounding)
        return clone

    @property
    def time_s(self) -> float:
        return self.origin_s + self.cursor_steps * self.step_s

    def feed(self, token: int) -> list[NoteEvent]:
        token = int(token)
        if self._on <= token < self._on + NUM_PITCHES:
            pitch = token - self._on
            events = []
            if pitch in self.sounding:
                events.append(NoteEvent(self.time_s, pitch, 0))
            self.sounding[pitch] = self.time_s
            events.append(NoteEvent(self.time_s, pitch, self.velocity))
            return events
        if self._off <= token < self._off + NUM_PITCHES:
            pitch = token - self._off
            if self.sounding.pop(pitch, None) is None:
                return []
            return [NoteEvent(self.time_s, pitch, 0)]
        if self._shift <= token < self._shift + self.vocab.time_shift_steps:
            self.cursor_steps += token - self._shift + 1
        elif self._vel <= token < self._vel + self.vocab.velocity_bins:
            self.velocity = self.vocab.bin_to_velocity(token - self._vel)
        return []

    def release_all(self) -> list[NoteEvent]:
        events = [NoteEvent(self.time_s, pitch, 0) for pitch in sorted(self.sounding)]
        self.sounding.clear()
        return events


class Note(NamedTuple):
    pitch: int
    onset_s: float
    offset_s: float
    velocity: int


def notes_to_messages(notes: Iterable[Note]) -> list[tuple[float, "Msg"]]:
    """Notes as time-ordered note_on/note_off messages; at equal times offs go first."""
    timed = []
    for note in notes:
        timed.append((note.onset_s, 1, Msg("note_on", note.pitch, note.velocity)))
        timed.append((max(note.offset_s, note.onset_s), 0, Msg("note_off", note.pitch, 0)))
    timed.sort(key=lambda item: (item[0], item[1], item[2].note))
    return [(time_s, msg) for time_s, _, msg in timed]


def encode_notes(vocab: Vocabulary, notes: Iterable[Note], start_token: bool = True,
                 style: str | None = None) -> list[int]:
    """A whole piece to tokens through the same incremental Encoder the daemon uses; with `style`,
    the style's token follows START."""
    encoder = Encoder(vocab)
    tokens = vocab.context_start(style) if start_token else []
    messages = notes_to_messages(notes)
    for time_s, msg in messages:
        tokens += encoder.feed(time_s, msg)
    if messages:
        tokens += encoder.release_all(messages[-1][0])
    return tokens


def decode_tokens(vocab: Vocabulary, tokens: Iterable[int]) -> list[Note]:
    """Tokens to notes; notes still sounding at the end close at the final time."""
    decoder = Decoder(vocab)
    onsets: dict[int, tuple[float, int]] = {}
    notes: list[Note] = []
    for token in tokens:
        for event in decoder.feed(token):
            if event.is_on:
                onsets[event.pitch] = (event.time_s, event.velocity)
            elif event.pitch in onsets:
                onset, velocity = onsets.pop(event.pitch)
                notes.append(Note(event.pitch, onset, event.time_s, velocity))
    for pitch, (onset, velocity) in onsets.items():
        notes.append(Note(pitch, onset, decoder.time_s, velocity))
    notes.sort(key=lambda n: (n.onset_s, n.pitch))
    return notes


class Msg(NamedTuple):
    """The minimal message shape the Encoder reads, for notes that never were MIDI."""

    type: str
    note: int
    velocity: int
    channel: int = 0
