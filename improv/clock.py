"""The session's time: tempo and beat from MIDI clock, and a grid for improv's onsets. Pure.

MIDI clock is 24 pulses per quarter note, with Start, Stop, Continue and Song Position Pointer (in
sixteenths). Real clock sources jitter by a millisecond or more, and a DAW sends a burst of pulses
after a stall, so tempo and phase come from a line fitted through the last pulses (least squares),
never from one interval. Each pulse is checked against the line and the last pulse counted:
- well after the time the line expects for it, yet right on the line's time for a later pulse: the
  pulses between were lost on the way (a JACK cycle missed), and are counted;
- well after it elsewhere (a stall): it counts for the position but not for the fit, so the pulses
  a DAW sends to catch up after a stall are counted too;
- less than half a pulse length after the last pulse counted: not a pulse of the clock followed (a
  second clock source on the same input, or a burst beyond any stall): ignored, so the beat stays
  tied to the time;
- otherwise the next pulse, fitted: a faster tempo is followed within the fit's length.
If the pulses go on off the line, evenly, at a tempo, the source has moved on, and the fit starts
again from them.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np

PULSES_PER_QUARTER = 24
PULSES_PER_SIXTEENTH = PULSES_PER_QUARTER // 4
FIT_PULSES = 24  # a beat of pulses in the fit: jitter averages out, a tempo change is followed within a beat
LATE_PULSES = 0.45  # a pulse this many pulse lengths after where the line expects it is late (a stall)
EARLY_PULSES = 0.5  # a pulse within this many pulse lengths of the last one counted is not the clock's
LOST_PULSES = 0.25  # a late pulse this close to a later pulse's place on the line: the ones between were lost
REFIT_PULSES = 12  # this many off the line in a row, at a tempo: the source jumped, fit afresh
MIN_BPM, MAX_BPM = 20.0, 400.0


class Timeline(Protocol):
    """Where the session's beat is, on the daemon's clock (seconds): what the engine asks when it
    places an answer. Beats are quarter notes since the song's start. The three sources (time.sync)
    are InternalTimeline, ClockFollower (MIDI clock) and improv.link.LinkTimeline."""

    @property
    def bpm(self) -> float | None:
        """The tempo, or None while it is not known (then improv plays in free time)."""

    @property
    def playing(self) -> bool:
        """False once the session's transport stopped: improv plays nothing until it starts again."""

    def beat_at(self, time_s: float) -> float | None:
        """The beat at `time_s`, or None while the tempo is not known."""

    def time_of_beat(self, beat: float) -> float | None:
        """When `beat` falls, or None while the tempo is not known."""


class InternalTimeline:
    """improv's own tempo (time.bpm), its beat 0 where `anchor` puts it: the first note of the
    player's phrase, so that improv's bars are counted from the player's downbeat."""

    def __init__(self, bpm: float, origin_s: float = 0.0):
        self.tempo_bpm, self.origin_s = float(bpm), origin_s

    @property
    def bpm(self) -> float:
        return self.tempo_bpm

    @property
    def playing(self) -> bool:
        return True

    def anchor(self, downbeat_s: float) -> None:
        self.origin_s = downbeat_s

    def set_bpm(self, bpm: float, now_s: float) -> None:
        """A new tempo from now on: the beat at `now_s` stays where it is."""
        beat = self.beat_at(now_s)
        self.tempo_bpm = float(bpm)
        self.origin_s = now_s - beat * 60.0 / self.tempo_bpm

    def beat_at(self, time_s: float) -> float:
        return (time_s - self.origin_s) * self.tempo_bpm / 60.0

    def time_of_beat(self, beat: float) -> float:
        return self.origin_s + beat * 60.0 / self.tempo_bpm


class PlayerTempo:
    """The tempo of the player's notes (time.follow_player): the tempo among MIN_BPM_HEARD..MAX_BPM_HEARD
    on whose beats, eighths and sixteenths the recent onsets line up best (the length of their mean
    phase vector), weighed by a prior around a moderate tempo, since a tempo and its half or double
    can line up as well."""

    WINDOW_S = 8.0  # the onsets heard in this long
    CHORD_S = 0.04  # onsets closer than this are one chord
    MIN_ONSETS = 6
    MIN_BPM_HEARD, MAX_BPM_HEARD, STEP_BPM = 60.0, 180.0, 0.25
    PRIOR_BPM, PRIOR_OCTAVES = 110.0, 0.5

    def __init__(self):
        self.onsets: deque[float] = deque()
        self._bpm: float | None = None
        self._estimated_for: float | None = None  # the last onset the estimate heard
        self._bpms = np.arange(self.MIN_BPM_HEARD, self.MAX_BPM_HEARD + self.STEP_BPM / 2, self.STEP_BPM)
        self._turns_per_s = self._bpms[:, None] / 60.0 * np.array([1.0, 2.0, 4.0])[None, :]
        self._prior = np.exp(-0.5 * (np.log2(self._bpms / self.PRIOR_BPM) / self.PRIOR_OCTAVES) ** 2)

    def note_on(self, time_s: float) -> None:
        if self.onsets and time_s - self.onsets[-1] < self.CHORD_S:
            return
        self.onsets.append(time_s)
        while time_s - self.onsets[0] > self.WINDOW_S:
            self.onsets.popleft()

    @property
    def bpm(self) -> float | None:
        """The tempo heard, or None before MIN_ONSETS onsets. Estimated when asked (about a
        millisecond), once per onset heard."""
        if len(self.onsets) < self.MIN_ONSETS:
            return self._bpm
        if self._estimated_for != self.onsets[-1]:
            self._bpm, self._estimated_for = self._estimate(), self.onsets[-1]
        return self._bpm

    def _estimate(self) -> float:
        offsets = np.asarray(self.onsets) - self.onsets[0]
        # On the beats, the eighths and the sixteenths: the sixteenths alone fit many tempos.
        turns = self._turns_per_s[:, :, None] * offsets[None, None, :]
        fit = np.abs(np.exp(2j * np.pi * turns).mean(axis=2)).mean(axis=1)
        return float(self._bpms[np.argmax(fit * self._prior)])

    def clear(self) -> None:
        self.onsets.clear()
        self._bpm = self._estimated_for = None


def parse_meter(meter: str) -> tuple[int, int]:
    """"6/8" -> (6, 8); ValueError naming what is allowed."""
    try:
        numerator, denominator = (int(part) for part in meter.split("/"))
    except ValueError:
        raise ValueError(f"{meter!r} is not a time signature such as 4/4, 3/4 or 6/8") from None
    if not 1 <= numerator <= 32 or denominator not in (1, 2, 4, 8, 16, 32):
        raise ValueError(f"{meter!r}: the beats per bar must be 1..32 and the note value 1, 2, 4, 8, 16 or 32")
    return numerator, denominator


def bar_beats(meter: str) -> float:
    """A bar's length in quarter notes: 4/4 -> 4, 3/4 -> 3, 6/8 -> 3."""
    numerator, denominator = parse_meter(meter)
    return numerator * 4.0 / denominator


class ClockFollower:
    """Follows a MIDI clock: `pulse`, `start`, `stop`, `proceed` (Continue) and `song_position` as
    they arrive, each with its time; `bpm`, `beat_at` and `time_of_beat` read the fit."""

    def __init__(self, fit_pulses: int = FIT_PULSES):
        self.fit: deque[tuple[int, float]] = deque(maxlen=fit_pulses)  # (pulse position, time)
        self.position = 0  # pulses since the song's start
        self.running = False  # between Start (or Continue) and Stop: pulses move the song on
        self.stopped = False  # a Stop was heard and no Start since (before any, improv plays free)
        self.ignored: Counter[str] = Counter()  # pulses left out: "stopped", "early" (another source, a burst), "late"
        self.off_line: deque[tuple[int, float]] = deque(maxlen=REFIT_PULSES)  # late pulses, in a row
        self.last_counted_s: float | None = None
        # The line through `fit`, fitted again only when `fit` changes: the engine reads it several
        # times for each token it generates.
        self.line: tuple[float, float] | None = None

    def start(self, time_s: float) -> None:
        """Start: from the song's beginning. The first pulse after it is the downbeat."""
        self.position, self.running, self.stopped = 0, True, False
        self._forget_fit()

    def stop(self, time_s: float) -> None:
        self.running, self.stopped = False, True

    def proceed(self, time_s: float) -> None:
        """Continue: on from where the song stopped or the pointer put it."""
        self.running, self.stopped = True, False
        self._forget_fit()  # the time between stop and continue is not tempo

    def song_position(self, sixteenths: int) -> None:
        """Song Position Pointer: where the next Continue starts from."""
        self.position = sixteenths * PULSES_PER_SIXTEENTH
        self._forget_fit()

    def _forget_fit(self) -> None:
        self.fit.clear()
        self.line = None
        self.off_line.clear()
        self.last_counted_s = None

    def pulse(self, time_s: float) -> None:
        if not self.running:
            self.ignored["stopped"] += 1
            return
        line = self.line
        if line is not None and time_s - (line[1] + line[0] * self.position) > LATE_PULSES * line[0]:
            on_line = (time_s - line[1]) / line[0]  # the position the line puts this time at
            gap = (time_s - self.last_counted_s) / line[0] if self.last_counted_s is not None else 0.0
            if round(gap) >= 2 and abs(gap - round(gap)) < LOST_PULSES and abs(on_line - round(on_line)) < LOST_PULSES:
                # Whole pulses after the last one, right where a later pulse falls: the ones between
                # were lost on the way (a JACK cycle missed), not held back by the source (a slower
                # tempo comes a fraction of a pulse late): they are counted, so the beat stays on time.
                self.ignored["lost"] += round(on_line) - self.position
                self.position = round(on_line)
                self._fitted(time_s)
                return
            self.off_line.append((self.position, time_s))
            self.position += 1
            self.last_counted_s = time_s
            self.ignored["late"] += 1
            self._refit_if_moved_on()
            return
        if line is not None and self.last_counted_s is not None and time_s - self.last_counted_s < EARLY_PULSES * line[0]:
            self.ignored["early"] += 1
            return
        self._fitted(time_s)

    def _fitted(self, time_s: float) -> None:
        self.last_counted_s = time_s
        self.off_line.clear()
        self.fit.append((self.position, time_s))
        self.line = _line(self.fit)
        self.position += 1

    def _refit_if_moved_on(self) -> None:
        """REFIT_PULSES late pulses in a row, evenly at a tempo: the source slowed down or jumped.
        The fit starts again from them (a catch-up burst's pulses are not at any tempo improv follows)."""
        moved_on = _line(self.off_line) if len(self.off_line) == REFIT_PULSES else None
        if moved_on is not None and _bpm(moved_on[0]) is not None:
            self.fit.clear()
            self.fit.extend(self.off_line)
            self.line = moved_on
            self.off_line.clear()

    # -- reading the fit --------------------------------------------------------------------------
    @property
    def playing(self) -> bool:
        return not self.stopped

    @property
    def bpm(self) -> float | None:
        """The tempo, or None before two pulses were heard (or when the fit is not a tempo)."""
        return None if self.line is None else _bpm(self.line[0])

    def beat_at(self, time_s: float) -> float | None:
        """Quarter notes since the song's start at `time_s`, on the fitted line."""
        if self.line is None or self.line[0] <= 0:
            return None
        seconds_per_pulse, origin_s = self.line
        return (time_s - origin_s) / seconds_per_pulse / PULSES_PER_QUARTER

    def time_of_beat(self, beat: float) -> float | None:
        if self.line is None or self.line[0] <= 0:
            return None
        seconds_per_pulse, origin_s = self.line
        return origin_s + beat * PULSES_PER_QUARTER * seconds_per_pulse


def _line(points) -> tuple[float, float] | None:
    """(seconds per pulse, time of pulse 0): the least-squares line through (position, time) points."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_p = sum(p for p, _ in points) / n
    mean_t = sum(t for _, t in points) / n
    spread = sum((p - mean_p) ** 2 for p, _ in points)
    if spread == 0:
        return None
    slope = sum((p - mean_p) * (t - mean_t) for p, t in points) / spread
    return slope, mean_t - slope * mean_p


def _bpm(seconds_per_pulse: float) -> float | None:
    """The tempo of a pulse length, or None outside the tempos improv follows."""
    if seconds_per_pulse <= 0:
        return None
    bpm = 60.0 / (seconds_per_pulse * PULSES_PER_QUARTER)
    return bpm if MIN_BPM <= bpm <= MAX_BPM else None


# -- the grid -------------------------------------------------------------------------------------
DIVISIONS = {"1/4": 1.0, "1/8": 0.5, "1/16": 0.25, "1/8t": 1 / 3, "1/16t": 1 / 6}  # in quarter notes


@dataclass(frozen=True)
class Grid:
    """Where improv's onsets are pulled: `division` of a quarter note, `swing` 0..0.75 (every second
    grid line moved later by this share of a division), `strength` 0..1 (0 free, 1 on the grid)."""

    division: str = "1/16"
    swing: float = 0.0
    strength: float = 1.0

    def line(self, index: int) -> float:
        """The beat of grid line `index` (line 0 is the song's beat 0), swing included."""
        step = DIVISIONS[self.division]
        return index * step + (self.swing * step if index % 2 else 0.0)

    def nearest_line(self, beat: float) -> float:
        index = round(beat / DIVISIONS[self.division])
        return min((self.line(i) for i in (index - 1, index, index + 1)), key=lambda line: abs(line - beat))

    def line_at_or_after(self, beat: float) -> float:
        index = math.floor(beat / DIVISIONS[self.division]) - 1
        while self.line(index) < beat:
            index += 1
        return self.line(index)

    def pull(self, beat: float, line: float) -> float:
        """`beat` moved toward `line` by the strength."""
        return beat + self.strength * (line - beat)

    def place(self, beat: float) -> float:
        """The beat an onset at `beat` is moved to."""
        if self.strength <= 0:
            return beat
        return self.pull(beat, self.nearest_line(beat))

    def place_after(self, beat: float, after: float) -> float:
        """As `place`, for an onset that must stay later than `after` (improv's next onset after its
        last): when the nearest line is not later, the next line after `after` is taken, so a short
        step is kept a step, never folded into a chord."""
        line = self.nearest_line(beat)
        if line <= after + 1e-9:
            line = self.line_at_or_after(after + 1e-9)
        return self.pull(beat, line)
