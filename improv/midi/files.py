"""MIDI files in and out, as timed messages and notes for the pure codec.

Files are read through mido. Files improv writes (`improv generate`'s output and the session
recording) are encoded here by one small encoder, TrackWriter: a type-1 file at 480 ticks a beat and
120 bpm, so a tick is 1/960 s, a track name, the tempo on the first track, note-ons and note-offs
with running status, and the end of track.

**In time.** When the session has a tempo, the file also carries it, so that a DAW imports it on its
grid: a TempoMap plans, from the session's (time, bpm, beat) as improv reads them, the file's
tempo map and meter, and TrackRetimer moves a track written by TrackWriter (a tick is 1/960 s) onto
it. Every message keeps its time in seconds (within half a tick of the file and 1/1920 s); what
changes is where the ticks are:

- the session's beats fall on the file's beats: a message at beat b of the session is at tick
  b * 480 + C, for an offset C that makes the session's bar lines (beats 0, 3, 6, ... in 3/4) the
  file's bar lines, so tick 0 is a bar line and bar 1 of the DAW is a bar of the session;
- before the tempo is first known, the file runs at 120 bpm in the session's meter from tick 0,
  and the session's first bar line (the one at or before the beat first heard) starts a bar of the
  file: the file's bar in which it falls is shortened to end there (a time signature of so many
  sixteenths, e.g. 3/16, then the meter again: a pickup when it is the first bar), and the ticks
  the rounding to a sixteenth leaves over are taken up by bending the tempo of the silence before
  (or, if there is too little of it, of the bar before). The session's beat can also jump later
  (improv's own tempo counts its bars from each phrase's first note; a MIDI clock's Start or Song
  Position moves it): that is met the same way, so each new start of the bars is a bar line;
- set_tempo events: where the tempo is first known, where it changes and at the bends. Between two
  of them the tempo is constant, and the file's beat stays within a 48th of a beat of the
  session's (the line through the session's beats of line simplification's "swing door", the
  roundest bpm that keeps to them, so 120 reads 120); a change is written no more often than once
  a beat. A jittery estimate (120 +- 0.2 bpm) whose beats keep to a line writes one tempo;
- the plan may still change over the last few bars (a jump bends the time before it), so a
  recording's last seconds are re-timed again at each rewrite, and only what is older is kept.
"""

from __future__ import annotations

import bisect
import errno
import math
import os
import secrets
import struct
from collections import deque
from pathlib import Path
from typing import Iterable, Sequence, Union

import mido

from improv.errors import MidiFileError
from improv.events import Encoder, Note, NoteEvent, Vocabulary, decode_tokens
from improv.midi.messages import DRUM_CHANNEL, NOTE_OFF, NOTE_ON

MIDI_SUFFIXES = (".mid", ".midi")
TICKS_PER_BEAT = 480
FILE_TEMPO = 500_000  # us per beat (120 bpm): files improv writes count seconds, not bars
TICKS_PER_S = TICKS_PER_BEAT * 1_000_000 / FILE_TEMPO  # 960.0
END_OF_TRACK = b"\x00\xff\x2f\x00"  # delta 0, meta 0x2F, length 0
META_TRACK_NAME, META_TEMPO, META_TIME_SIGNATURE = 0x03, 0x51, 0x58

# The file's tempo map (TempoMap): see the module's docstring.
BEAT_TOLERANCE_TICKS = TICKS_PER_BEAT / 48  # the file's beat keeps this close to the session's (10 ms at 120 bpm)
JUMP_BEATS = 0.125  # a beat this far off the one the last tempo foretold: the session's beat jumped
JUMP_SLACK_S = 0.05  # a jump's new bar line may be this much older than the last beat heard before it
STEADY_BPM = 0.5  # a tempo heard this far from a segment's mean so far is a change: the segment ends before it
BEND = 4.0  # a stretch bent to meet a jump plays at most this many times faster or slower ...
BENT_BPM = (30.0, 300.0)  # ... and within the tempos DAWs take (unless it bends by a quarter at most)
RECENT_EVENTS = 16  # the times of the last events recorded: where the silence before a jump begins
SETTLED_S, SETTLED_BARS = 4.0, 3  # a plan is final this long before the latest time heard (the longer)
MIN_BPM, MAX_BPM = 4.0, 1000.0  # tempos outside are not written (0xFFFFFF us a beat is 3.6 bpm)

Bytes = Union[bytes, bytearray, memoryview]


def read_messages(path: str | os.PathLike) -> list[tuple[float, mido.Message]]:
    """All channel messages of a file, tracks merged, with absolute times in seconds.

    Raises MidiFileError when the file is not MIDI or holds no pitched note.
    """
    path = Path(path)
    try:
        midi = mido.MidiFile(path, clip=True)
        timed, now = [], 0.0
        for msg in midi:  # merged tracks; msg.time is the delta in seconds (tempo map applied)
            now += msg.time
            if not msg.is_meta:
                timed.append((now, msg))
    except FileNotFoundError as err:
        raise MidiFileError(f"{path}: no such file") from err
    except (OSError, EOFError, ValueError, KeyError, IndexError) as err:
        raise MidiFileError(f"{path} is not a readable MIDI file ({err}); give a Standard MIDI File (.mid)") from err
    pitched = [m for _, m in timed if m.type == "note_on" and m.velocity > 0 and m.channel != DRUM_CHANNEL]
    if not pitched:
        what = "only drums" if any(m.type == "note_on" for _, m in timed) else "no notes"
        raise MidiFileError(f"{path} has {what}: improv needs pitched notes (channels other than 10)")
    return timed


def encode_messages(vocab: Vocabulary, timed: Iterable[tuple[float, object]], start_token: bool = True) -> list[int]:
    encoder = Encoder(vocab)
    tokens = [vocab.special("START")] if start_token else []
    last = 0.0
    for time_s, msg in timed:
        tokens += encoder.feed(time_s, msg)
        last = time_s
    tokens += encoder.release_all(last)
    return tokens


def encode_file(vocab: Vocabulary, path: str | os.PathLike, start_token: bool = True) -> list[int]:
    return encode_messages(vocab, read_messages(path), start_token)


def read_notes(vocab: Vocabulary, path: str | os.PathLike) -> list[Note]:
    """Notes as the model hears them (pedal applied, channels merged, times on the grid)."""
    return decode_tokens(vocab, encode_file(vocab, path))


def varlen(value: int) -> bytes:
    """A MIDI variable-length quantity: 7 bits a byte, most significant first, the high bit on all but the last."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def file_header(tracks: int) -> bytes:
    """The MThd chunk of a type-1 file of `tracks` tracks at TICKS_PER_BEAT."""
    return b"MThd" + struct.pack(">IHHH", 6, 1, tracks, TICKS_PER_BEAT)


def track_header(body_bytes: int) -> bytes:
    """The MTrk chunk's header for a track whose events take `body_bytes`, END_OF_TRACK not counted."""
    return b"MTrk" + struct.pack(">I", body_bytes + len(END_OF_TRACK))


class TrackWriter:
    """One track's events, encoded as they come: a track name, the tempo if asked, then notes at
    times in seconds (ticks never go back: an event earlier than the last one is written at the
    same tick). Notes use running status. `body` holds the bytes encoded so far; `take()` hands
    them over and goes on with a fresh buffer (the times and the running status carry on), so a
    writer can encode a track a piece at a time. A note is a few bytearray appends: cheap enough
    for a real-time thread."""

    __slots__ = ("body", "channel", "last_tick", "_status")

    def __init__(self, name: str, channel: int = 0, tempo: bool = False):
        self.body = bytearray()
        self.channel = channel & 0x0F
        self.last_tick = 0
        self._status = -1  # the running status: none yet
        self.meta(META_TRACK_NAME, name.encode("latin-1", errors="replace"))  # mido reads names as latin-1
        if tempo:
            self.meta(META_TEMPO, FILE_TEMPO.to_bytes(3, "big"))

    def meta(self, kind: int, data: bytes) -> None:
        """A meta event at the current tick (it ends the running status)."""
        self.body += b"\x00\xff" + bytes((kind,)) + varlen(len(data)) + data
        self._status = -1

    def _advance(self, time_s: float) -> int:
        """Ticks from the last event to one at `time_s` (never back in time)."""
        tick = round(time_s * TICKS_PER_S) if time_s > 0 else 0
        delta = max(0, tick - self.last_tick)
        self.last_tick += delta
        return delta

    def note(self, time_s: float, pitch: int, velocity: int) -> None:
        """A note-on (velocity > 0) or a note-off (velocity 0) at `time_s` seconds from the track's start."""
        delta = self._advance(time_s)
        status = (NOTE_ON if velocity > 0 else NOTE_OFF) | self.channel
        body = self.body
        if delta < 0x80:
            body.append(delta)
        else:
            body += varlen(delta)
        if status != self._status:
            body.append(status)
            self._status = status
        body.append(pitch & 0x7F)
        body.append(min(velocity, 0x7F) if velocity > 0 else 0)

    def message(self, time_s: float, data) -> None:
        """A channel message (status byte and data bytes, as sent on a port) at `time_s`, moved to the
        track's channel; anything else (system messages) is not written."""
        if not data or not 0x80 <= data[0] < 0xF0:
            return
        delta = self._advance(time_s)
        status = (data[0] & 0xF0) | self.channel
        self.body += varlen(delta)
        if status != self._status:
            self.body.append(status)
            self._status = status
        self.body += bytes(b & 0x7F for b in data[1:])

    def take(self) -> bytearray:
        """The bytes encoded since the last take; the writer goes on into a new buffer."""
        body, self.body = self.body, bytearray()
        return body

    def chunk(self) -> bytes:
        """The whole track as an MTrk chunk, for a writer whose bytes were never taken."""
        return track_header(len(self.body)) + bytes(self.body) + END_OF_TRACK


def tempo_meta(us_per_beat: int) -> bytes:
    """A set_tempo meta event without its delta."""
    return b"\xff\x51\x03" + min(max(int(us_per_beat), 1), 0xFFFFFF).to_bytes(3, "big")


def time_signature_meta(numerator: int, denominator: int) -> bytes:
    """A time_signature meta event without its delta: a metronome click on each beat (the dotted
    beat of compound meters, 6/8, 9/8, 12/8) and 8 32nds to a quarter note."""
    compound = denominator >= 8 and numerator % 3 == 0 and numerator > 3
    click = 96 // denominator * (3 if compound else 1)
    return bytes((0xFF, META_TIME_SIGNATURE, 4, numerator, denominator.bit_length() - 1, click, 8))


def check_meter(numerator: int, denominator: int) -> tuple[int, int]:
    """(numerator, denominator) of a meter a file can carry; ValueError otherwise."""
    if not (isinstance(numerator, int) and isinstance(denominator, int) and 1 <= numerator <= 255
            and denominator in (1, 2, 4, 8, 16, 32, 64)):
        raise ValueError(f"{numerator}/{denominator} is not a time signature: the beats per bar must be 1..255 "
                         f"and the note value 1, 2, 4, 8, 16, 32 or 64")
    return numerator, denominator


def _tempo_us(ticks_per_s: float) -> int:
    """The tempo (us a beat) at which the file's ticks advance `ticks_per_s`."""
    bpm = ticks_per_s * 60.0 / TICKS_PER_BEAT
    return round(60_000_000 / min(max(bpm, MIN_BPM), MAX_BPM))


def _rate(us_per_beat: int) -> float:
    """Ticks a second at a tempo of `us_per_beat`."""
    return TICKS_PER_BEAT * 1_000_000 / us_per_beat


def _slope_us(span_s: float, ticks: float, low: float, high: float) -> int:
    """The tempo (us a beat) of a segment whose lines within the tolerance are `low`..`high` ticks a
    second, and which should reach `ticks` in `span_s`: the roundest bpm among them (a whole one, a
    half, a tenth, a hundredth) that gets there within a quarter of the tolerance, else the one that
    gets there (so a steady tempo reads as it is, and the file's beat does not stay off the session's)."""
    exact = min(max(ticks / span_s, low), high)
    low_bpm, high_bpm = low * 60.0 / TICKS_PER_BEAT, high * 60.0 / TICKS_PER_BEAT
    for step in (1.0, 0.5, 0.1, 0.01):
        bpm = round(exact * 60.0 / TICKS_PER_BEAT / step) * step
        rate = bpm * TICKS_PER_BEAT / 60.0
        if low_bpm <= bpm <= high_bpm and abs(rate * span_s - ticks) <= BEAT_TOLERANCE_TICKS / 4:
            return _tempo_us(rate)
    return _tempo_us(exact)


class TempoView:
    """A copy of a TempoMap's plan, for re-timing tracks on another thread: segments of constant
    tempo (their start in seconds and in ticks, and ticks a second) and the meta events the first
    track carries, as (tick, order, bytes) in file order."""

    __slots__ = ("starts", "ticks", "rates", "metas")

    def __init__(self, starts: list[float], ticks: list[int], tempos: list[int], meters: list[tuple[int, int, int]]):
        self.starts, self.ticks = starts, ticks
        self.rates = [_rate(us) for us in tempos]
        metas = [(tick, 0, time_signature_meta(num, den)) for tick, num, den in meters]
        last = None
        for tick, us in zip(ticks, tempos):
            if us != last:  # a tempo that goes on is not said again
                metas.append((tick, 1, tempo_meta(us)))
                last = us
        metas.sort(key=lambda meta: meta[:2])
        self.metas = metas


class TempoMap:
    """The plan of a file's tempo map and meter, made as the session's tempo is heard: `meter()`
    once, then `tempo(time_s, bpm, beat)` whenever the session's tempo is read (time_s from the
    file's start; at time_s the session is at quarter note `beat` of the song, at `bpm`). Each call
    is a few arithmetic operations (an engine thread may make it); the plan is kept as segments of
    constant tempo (`starts`, `ticks`, `tempos`) and time signatures (`meters`, as (tick,
    numerator, denominator)). `settle(time_s)` makes everything before time_s final; `view()` copies
    the plan. Before the first tempo, the file runs at 120 bpm (FILE_TEMPO) from tick 0."""

    def __init__(self, numerator: int = 4, denominator: int = 4):
        self.starts: list[float] = [0.0]  # each segment's start in seconds from the file's start
        self.ticks: list[int] = [0]  # and in ticks
        self.tempos: list[int] = [FILE_TEMPO]  # and its tempo, us a beat
        self.meters: list[tuple[int, int, int]] = []
        self.prev: tuple[float, float, float] | None = None  # the last tempo heard: (time_s, beat, bpm)
        self.set_meter(numerator, denominator)
        self.origin = 0  # the tick of the last time signature: the file's bar lines run from it
        self.horizon = 0.0  # nothing before this time changes any more (settle)
        self.offset = 0.0  # the session's beat b is at tick b * TICKS_PER_BEAT + offset
        self.latest_s = 0.0
        self.last_jump_s = -math.inf
        # The times of the last events written (s from the file's start), as the recorder appends them.
        self.recent: deque[float] = deque(maxlen=RECENT_EVENTS)
        self._reset_door()

    @property
    def known(self) -> bool:
        """True once a tempo was heard."""
        return self.prev is not None

    def set_meter(self, numerator: int, denominator: int) -> None:
        """The session's meter, before the first tempo."""
        if self.known:
            raise ValueError("the meter is set before the first tempo")
        self.numerator, self.denominator = check_meter(numerator, denominator)
        self.bar_ticks = TICKS_PER_BEAT * 4 * numerator // denominator
        self.unit = TICKS_PER_BEAT * 4 // max(16, denominator)  # a shortened bar is whole sixteenths
        self.meters = [(0, numerator, denominator)]

    def _reset_door(self) -> None:
        """A new segment: any slope so far (the 'door' of slopes, in ticks a second, of the lines from
        its start that pass within the tolerance of every beat heard since)."""
        self.low, self.high = 0.0, math.inf
        self.good = None  # the last beat heard within the door: (time_s, low, high, its tick) then
        self.steady = None  # the same, for the last beat heard at the segment's tempo so far
        self.departure = None  # the first beat heard after it at another tempo: (time_s, its tick, bpm)
        self.bpm_sum, self.bpm_count = 0.0, 0

    def _provisional(self) -> None:
        """The last segment, while it may change, takes the roundest tempo its door lets it."""
        if self._mutable() and self.good is not None:
            self.tempos[-1] = self._slope(self.good)

    def _slope(self, end: tuple[float, float, float, float]) -> int:
        """The last segment's tempo if it ends at `end` (a beat heard within the door)."""
        end_s, low, high, target = end
        return _slope_us(end_s - self.starts[-1], target - self.ticks[-1], low, high)

    def _mutable(self) -> bool:
        return self.starts[-1] >= self.horizon

    # -- hearing the session's tempo -----------------------------------------------------------------
    def tempo(self, time_s: float, bpm: float, beat: float) -> None:
        if not (math.isfinite(time_s) and math.isfinite(beat) and MIN_BPM <= bpm <= MAX_BPM):
            return
        if self.horizon == math.inf:
            return  # settled to its end: the take is over
        if time_s < 0:  # before the file's start: its beat at the start
            beat, time_s = beat - time_s * bpm / 60.0, 0.0
        prev = self.prev
        if prev is None:
            self.latest_s = time_s
            self._jump(time_s, bpm, beat, 0.0)
            return
        prev_s, prev_beat, prev_bpm = prev
        if time_s < prev_s:
            return  # out of order: the plan only goes forward
        self.latest_s = time_s
        span = time_s - prev_s
        foretold = prev_beat + span * (prev_bpm + bpm) / 120.0  # a change of tempo between two calls
        if abs(beat - foretold) > JUMP_BEATS + abs(bpm - prev_bpm) * span / 120.0:  # is not a jump
            if time_s - self.last_jump_s >= 60.0 / bpm:  # (at most one a beat: a jumping beat is garbage)
                self._jump(time_s, bpm, beat, prev_s)
            return
        self.prev = (time_s, beat, bpm)
        self._follow(time_s, bpm, beat)

    def _follow(self, time_s: float, bpm: float, beat: float) -> None:
        """The session's beat went on: the segment goes on while a line from its start stays within
        the tolerance of every beat heard, and ends (not before it lasted a beat) once none does."""
        target = beat * TICKS_PER_BEAT + self.offset
        start_s, start_tick = self.starts[-1], self.ticks[-1]
        span = time_s - start_s
        if span <= 1e-9:
            return
        low = max(self.low, (target - BEAT_TOLERANCE_TICKS - start_tick) / span)
        high = min(self.high, (target + BEAT_TOLERANCE_TICKS - start_tick) / span)
        if low <= high:
            self.low, self.high = low, high
            self.good = (time_s, low, high, target)
            self.bpm_sum += bpm
            self.bpm_count += 1
            if abs(bpm - self.bpm_sum / self.bpm_count) <= STEADY_BPM:
                self.steady, self.departure = self.good, None
            elif self.departure is None:
                self.departure = (time_s, target, bpm)
            return
        beat_s = 60.0 / bpm
        # It ends where the tempo heard changed (if lately), else at the last beat within the door.
        end = self.steady if self.steady is not None and time_s - self.steady[0] <= beat_s else self.good
        if end is not None and end[0] - start_s >= beat_s:
            if self._mutable():
                self.tempos[-1] = self._slope(end)
            end_s = end[0]
            if end is self.steady:  # where its line meets that of the first beat heard at the new tempo
                end_s = self._meeting(end_s, *(self.departure or (time_s, target, bpm)))
            self._end_segment(max(end_s, self.horizon), _tempo_us(bpm * TICKS_PER_BEAT / 60.0))
            self._follow(time_s, bpm, beat)
        elif span >= beat_s:  # overdue: the segment lasted a beat, and ends on this beat
            if self._mutable() and target > start_tick:
                self.tempos[-1] = _tempo_us((target - start_tick) / span)
            self._end_segment(max(time_s, self.horizon), _tempo_us(bpm * TICKS_PER_BEAT / 60.0))
        # else: not a beat long yet; it goes on

    def _meeting(self, steady_s: float, then_s: float, then_tick: float, then_bpm: float) -> float:
        """When the last segment's line meets the line at `then_bpm` through `then_tick` at `then_s`
        (the tempo changed between the two beats heard, `steady_s` and `then_s`)."""
        rate, then_rate = _rate(self.tempos[-1]), then_bpm * TICKS_PER_BEAT / 60.0
        at_then = self.ticks[-1] + (then_s - self.starts[-1]) * rate  # the segment's line at then_s
        if abs(then_rate - rate) < 1e-9:
            return steady_s
        meeting_s = then_s - (then_tick - at_then) / (then_rate - rate)
        return min(max(meeting_s, steady_s), then_s)

    def _end_segment(self, time_s: float, next_us: int, tick: int | None = None) -> None:
        """The last segment ends at `time_s` (at `tick` if given, else where its tempo gets to) and
        one at `next_us` starts there."""
        start_s, start_tick, rate = self.starts[-1], self.ticks[-1], _rate(self.tempos[-1])
        if tick is None:
            tick = round(start_tick + (time_s - start_s) * rate)
        if tick <= start_tick:
            if self._mutable():  # it would last no tick: it takes the new tempo instead
                self.tempos[-1] = next_us
                self._reset_door()
                return
            tick = start_tick + 1
        if start_s + (tick - start_tick) / rate < self.horizon:  # (a rounding must not start it in the final past)
            tick = math.ceil(start_tick + (self.horizon - start_s) * rate)
        self.starts.append(start_s + (tick - start_tick) / rate)
        self.ticks.append(tick)
        self.tempos.append(next_us)
        self._reset_door()

    def _jump(self, time_s: float, bpm: float, beat: float, prev_s: float) -> None:
        """The session's beat is not where the last tempo foretold (or is heard for the first time):
        its bars start again at the new line's bar line. The file's bar in which that falls is
        shortened to end there (so many sixteenths), and the bar before it bends its tempo to take
        up the rounding; where it cannot (too short a time), the new line starts off the beat and
        the next segments bring it back."""
        beat_s = 60.0 / bpm
        bar_beats = self.bar_ticks / TICKS_PER_BEAT
        self._provisional()
        start_s, start_tick, rate = self.starts[-1], self.ticks[-1], _rate(self.tempos[-1])
        lower = max(start_s, self.horizon)
        bar_line = math.floor(beat / bar_beats + 1e-9) * bar_beats
        join_s = time_s - (beat - bar_line) * beat_s  # the new line's last bar line ...
        if join_s < prev_s - JUMP_SLACK_S:
            join_s = prev_s  # ... unless the old line was heard after it: the jump came mid-bar
        join_s = min(max(join_s, lower), time_s)
        join_beat = beat - (time_s - join_s) / beat_s
        phase = (join_beat % bar_beats) * TICKS_PER_BEAT  # ticks into its bar at the join
        if phase > self.bar_ticks - 1e-6:
            phase = 0.0
        old = start_tick + (join_s - start_s) * rate  # where the file is at the join
        # The new line's bar line at or before the join, as a tick after the last final bar line.
        bar = self.bar_ticks
        floor_tick = max(self.origin, self.tick_at(self.horizon))
        first_bar = self.origin + math.ceil((floor_tick - self.origin) / bar) * bar
        new_bar = old - phase
        if new_bar < first_bar:
            new_bar += math.ceil((first_bar - new_bar) / bar) * bar
        old_bar = self.origin + math.floor((new_bar - self.origin) / bar) * bar
        partial = new_bar - old_bar  # ticks of the old bar before the new bar line
        steps = partial / self.unit
        choices = sorted({0, bar} | {k * self.unit for k in (math.floor(steps) - 1, math.floor(steps),
                                                              math.ceil(steps), math.ceil(steps) + 1)
                                     if 0 <= k * self.unit <= bar})
        best, bend, region_s = min(choices, key=lambda p: abs(p - partial)), False, join_s
        # The time before the join bends to meet it: the silence before it if that can (so every
        # note keeps its beat), else the bar before it.
        before = [event_s for event_s in self.recent if event_s < join_s - 1e-6]
        if before:
            quiet_s = max(before)
        else:
            quiet_s = -math.inf if len(self.recent) < RECENT_EVENTS else join_s
        for from_s in (max(lower, quiet_s, join_s - bar / rate), max(lower, join_s - bar / rate)):
            fit = self._bend(from_s, join_s, start_s, start_tick, rate, old, partial, choices)
            if fit is not None:
                best, bend, region_s = fit, True, from_s
                break
        target = old + best - partial  # the join's tick on the new line
        next_us = _tempo_us(bpm * TICKS_PER_BEAT / 60.0)
        if bend:
            self._end_segment(region_s, self.tempos[-1])
            from_s, from_tick = self.starts[-1], self.ticks[-1]
            join_tick = max(round(target), from_tick + 1)
            self.tempos[-1] = _tempo_us((join_tick - from_tick) / (join_s - from_s)) if join_s > from_s else next_us
            self._end_segment(join_s, next_us, join_tick)
        else:
            self._end_segment(join_s, next_us)
        if 0 < best < bar:  # the old bar ends at the new bar line
            del self.meters[bisect.bisect_left(self.meters, (old_bar, -1, -1)):]
            steps, unit_value = best // self.unit, 4 * TICKS_PER_BEAT // self.unit
            while steps % 2 == 0 and unit_value > self.denominator:
                steps, unit_value = steps // 2, unit_value // 2
            self.meters.append((old_bar, steps, unit_value))
            self.origin = old_bar + best
            self.meters.append((self.origin, self.numerator, self.denominator))
        self.offset = target - join_beat * TICKS_PER_BEAT
        self.prev = (time_s, beat, bpm)
        self.last_jump_s = time_s
        self._follow(time_s, bpm, beat)

    @staticmethod
    def _bend(from_s, join_s, start_s, start_tick, rate, old, partial, choices) -> int | None:
        """The length of the shortened bar (one of `choices`) whose join the time from `from_s`
        bends least to meet, or None if none can within BEND and BENT_BPM."""
        from_tick = start_tick + (from_s - start_s) * rate
        if old - from_tick <= 1.0 or join_s - from_s <= 1e-6:
            return None
        fits = []
        for length in choices:
            ratio = (old + length - partial - from_tick) / (old - from_tick)
            bpm = ratio * rate * 60.0 / TICKS_PER_BEAT
            if 1 / BEND <= ratio <= BEND and (BENT_BPM[0] <= bpm <= BENT_BPM[1] or 0.8 <= ratio <= 1.25):
                fits.append((abs(math.log(ratio)), length))
        return min(fits)[1] if fits else None

    # -- the plan --------------------------------------------------------------------------------------
    def tick_at(self, time_s: float) -> float:
        index = max(bisect.bisect_right(self.starts, time_s) - 1, 0)
        return self.ticks[index] + (time_s - self.starts[index]) * _rate(self.tempos[index])

    def settle_s(self) -> float:
        """How long before the latest time heard the plan may still change."""
        return max(SETTLED_S, SETTLED_BARS * self.bar_ticks / _rate(self.tempos[-1]))

    def settle(self, horizon_s: float) -> None:
        """Nothing before `horizon_s` changes any more: the segment in force then keeps its tempo."""
        if horizon_s <= self.horizon:
            return
        if self.starts[-1] < horizon_s and self._mutable():
            self._provisional()
            self.low = self.high = _rate(self.tempos[-1])
        self.horizon = horizon_s

    def view(self) -> TempoView:
        self._provisional()
        return TempoView(list(self.starts), list(self.ticks), list(self.tempos), list(self.meters))


class TrackRetimer:
    """Moves a track TrackWriter wrote (a tick is 1/960 s) onto a TempoMap's plan, a piece at a time:
    `feed` its bytes as they come; `retime(view, until_s)` returns the file's bytes for the messages
    before `until_s` (which the plan will not change any more) and forgets them; `tail(view)` gives
    the rest as the plan has it now, and every meta event of `view` left (for the first track), without
    forgetting anything. The writer's own set_tempo is dropped; other events keep their order and
    seconds, within a tick. Running status is written afresh."""

    __slots__ = ("raw", "state", "metas")

    def __init__(self, metas: bool = False):
        self.raw = bytearray()
        self.metas = metas  # this track carries the map's meta events
        # (raw tick, raw running status, file tick, file running status, last map meta written, segment)
        self.state = (0, -1, 0, -1, (-1, -1), 0)

    def feed(self, data: Bytes) -> None:
        self.raw += data

    def retime(self, view: TempoView, until_s: float) -> bytearray:
        out, used, self.state = self._run(view, until_s, False)
        del self.raw[:used]
        return out

    def tail(self, view: TempoView) -> bytearray:
        return self._run(view, math.inf, True)[0]

    def _run(self, view: TempoView, until_s: float, to_end: bool):
        raw, out = self.raw, bytearray()
        raw_tick, raw_status, tick, status, meta_key, segment = self.state
        starts, ticks, rates = view.starts, view.ticks, view.rates
        metas = view.metas if self.metas else []
        meta = bisect.bisect_right([m[:2] for m in metas], meta_key)
        pos, size, last_segment = 0, len(raw), len(starts) - 1
        while pos < size:
            delta, at = 0, pos
            while True:
                byte = raw[at]
                at += 1
                delta = (delta << 7) | (byte & 0x7F)
                if byte < 0x80:
                    break
            time_s = (raw_tick + delta) / TICKS_PER_S
            if time_s >= until_s:
                break
            while segment < last_segment and starts[segment + 1] <= time_s:
                segment += 1
            file_tick = max(tick, round(ticks[segment] + (time_s - starts[segment]) * rates[segment]))
            head = raw[at]
            if head in (0xFF, 0xF0, 0xF7):  # a meta event or sysex: its length, then its bytes
                length, data_at = 0, at + 2 if head == 0xFF else at + 1
                while True:
                    byte = raw[data_at]
                    data_at += 1
                    length = (length << 7) | (byte & 0x7F)
                    if byte < 0x80:
                        break
                end = data_at + length
                if not (head == 0xFF and raw[at + 1] == META_TEMPO):  # the writer's tempo is the map's now
                    out += varlen(file_tick - tick)
                    out += raw[at:end]
                    tick, status = file_tick, -1
            else:
                if head >= 0x80:
                    raw_status, at = head, at + 1
                end = at + (1 if raw_status & 0xE0 == 0xC0 else 2)  # program change, channel pressure: 1
                while meta < len(metas) and metas[meta][0] <= file_tick:
                    meta_tick = max(metas[meta][0], tick)
                    out += varlen(meta_tick - tick)
                    out += metas[meta][2]
                    tick, status, meta_key = meta_tick, -1, metas[meta][:2]
                    meta += 1
                out += varlen(file_tick - tick)
                if raw_status != status:
                    out.append(raw_status)
                    status = raw_status
                out += raw[at:end]
                tick = file_tick
            raw_tick += delta
            pos = end
        if to_end:
            for meta_tick, _, data in metas[meta:]:
                meta_tick = max(meta_tick, tick)
                out += varlen(meta_tick - tick)
                out += data
                tick = meta_tick
        return out, pos, (raw_tick, raw_status, tick, status, meta_key, segment)


def encode_track(name: str, events: Iterable[NoteEvent], channel: int = 0, tempo: bool = False,
                 view: TempoView | None = None) -> bytes:
    """A track's MTrk chunk: its name, the tempo if asked, the events in time order (at one time,
    note-offs before note-ons), the end of track. With a tempo map's `view`, the track is on it, and
    carries its meta events if `tempo`."""
    writer = TrackWriter(name, channel, tempo and view is None)
    for event in sorted(events, key=lambda e: (e.time_s, e.velocity > 0)):
        writer.note(event.time_s, event.pitch, event.velocity)
    if view is None:
        return writer.chunk()
    retimer = TrackRetimer(metas=tempo)
    retimer.feed(writer.body)
    body = retimer.tail(view)
    return track_header(len(body)) + bytes(body) + END_OF_TRACK


def meter_of(meter: str | tuple[int, int]) -> tuple[int, int]:
    """"6/8" or (6, 8) -> (6, 8); ValueError if it is not a time signature."""
    if isinstance(meter, str):
        try:
            numerator, denominator = (int(part) for part in meter.split("/"))
        except ValueError:
            raise ValueError(f"{meter!r} is not a time signature such as 4/4, 3/4 or 6/8") from None
        return check_meter(numerator, denominator)
    return check_meter(*meter)


def constant_tempo(bpm: float, meter: str | tuple[int, int] = (4, 4), downbeat_s: float = 0.0) -> TempoView:
    """The tempo map of a file at `bpm` whose bar 1 of the music starts at `downbeat_s` (the time of beat 0):
    from tick 0 if it is 0, else after a shortened first bar (see TempoMap)."""
    if not MIN_BPM <= bpm <= MAX_BPM:
        raise ValueError(f"a file's tempo must be {MIN_BPM:g}..{MAX_BPM:g} bpm, got {bpm}")
    plan = TempoMap(*meter_of(meter))
    plan.tempo(downbeat_s, bpm, 0.0)
    plan.settle(math.inf)
    return plan.view()


def replace_file(path: Path, parts: Iterable[Bytes]) -> None:
    """Write `parts` one after the other to a temporary file beside `path`, then rename it over `path`:
    a reader (or a crash) sees the old file or the new one, never half of one. The file gets the
    mode a new file gets (the umask applies). MidiFileError, naming the path, when it cannot be
    written; no temporary file is left behind then."""
    try:
        fd, tmp = _temporary_beside(path)
    except OSError as err:
        raise MidiFileError(f"cannot write {path}: {err.strerror or err}") from err
    try:
        with os.fdopen(fd, "wb") as handle:
            for part in parts:
                handle.write(part)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise MidiFileError(f"cannot write {path}: {err.strerror or err}") from err
        raise


def _temporary_beside(path: Path) -> tuple[int, Path]:
    """A new file `.NAME.<random>.tmp` in `path`'s folder, open for writing (mode 0666 less the umask,
    unlike tempfile.mkstemp's 0600)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no free temporary name beside {path}")


def write_tracks(path: str | os.PathLike, tracks: Sequence[tuple[str, Sequence[NoteEvent]]],
                 channels: Sequence[int] | None = None, bpm: float | None = None,
                 meter: str | tuple[int, int] | None = None, downbeat_s: float = 0.0) -> None:
    """Write named tracks of timed note events as a type-1 file, the tempo on the first; the
    events' channel is `channels[i]` for track i (default: i). Replaces `path` atomically.

    Without `bpm`, the file is at 120 bpm (its ticks count seconds). With it, the file is at `bpm`
    in `meter` (default 4/4) with beat 0 (a bar line) at `downbeat_s`, so that a DAW imports it in
    time; the events keep their times in seconds either way."""
    path = check_output_path(path)
    view = constant_tempo(bpm, meter or (4, 4), downbeat_s) if bpm is not None else None
    chunks = [encode_track(name, events, channels[index] if channels else index, tempo=index == 0, view=view)
              for index, (name, events) in enumerate(tracks)]
    replace_file(path, [file_header(len(chunks)), *chunks])


def check_output_path(path: str | os.PathLike) -> Path:
    """A path a MIDI file can be written to, checked before any work is done for it."""
    path = Path(path)
    if path.is_dir():
        raise MidiFileError(f"{path} is a folder; give a file name to write, e.g. {path / 'out.mid'}")
    parent = path.parent
    if not parent.is_dir():
        raise MidiFileError(f"cannot write {path}: the folder {parent} does not exist; create it first or "
                            f"write elsewhere")
    if not os.access(parent, os.W_OK):
        raise MidiFileError(f"cannot write {path}: the folder {parent} is not writable")
    return path
