"""The session's time: tempo and beat from MIDI clock, and a grid for improv's onsets. Pure.

MIDI clock is 24 pulses per quarter note, with Start, Stop, Continue and Song Position Pointer (in
sixteenths). Real clock sources jitter by a millisecond or more, and a DAW sends a burst of pulses
after a stall, so tempo and phase come from a line fitted through the last pulses (least squares),
never from one interval. A pulse far off that line (a stall, a burst) counts for the position but
not for the fit; if the pulses go on off it, evenly, at a tempo, the source has moved on, and the fit
starts again from them (a burst's pulses are not evenly spaced at any tempo improv follows).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

PULSES_PER_QUARTER = 24
PULSES_PER_SIXTEENTH = PULSES_PER_QUARTER // 4
FIT_PULSES = 48  # two beats of pulses in the fit: jitter averages out, a tempo change shows within a beat
OFF_LINE_PULSES = 2.0  # a pulse further than this many pulse lengths from the line is not fitted
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

    def beat_at(self, time_s: float) -> float:
        return (time_s - self.origin_s) * self.tempo_bpm / 60.0

    def time_of_beat(self, beat: float) -> float:
        return self.origin_s + beat * 60.0 / self.tempo_bpm


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
        self.ignored = 0  # pulses left out of the fit (bursts, stalls, pulses while stopped)
        self.off_line: deque[tuple[int, float]] = deque(maxlen=REFIT_PULSES)  # pulses off it, in a row

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
        self.off_line.clear()

    def pulse(self, time_s: float) -> None:
        if not self.running:
            self.ignored += 1
            return
        line = _line(self.fit)
        if line is not None and abs(time_s - (line[1] + line[0] * self.position)) > OFF_LINE_PULSES * line[0]:
            self.off_line.append((self.position, time_s))
            self.position += 1
            self.ignored += 1
            moved_on = _line(self.off_line) if len(self.off_line) == REFIT_PULSES else None
            if moved_on is not None and _bpm(moved_on[0]) is not None:
                self.fit.clear()
                self.fit.extend(self.off_line)
                self.off_line.clear()
            return
        self.off_line.clear()
        self.fit.append((self.position, time_s))
        self.position += 1

    # -- reading the fit --------------------------------------------------------------------------
    @property
    def playing(self) -> bool:
        return not self.stopped

    @property
    def bpm(self) -> float | None:
        """The tempo, or None before two pulses were heard (or when the fit is not a tempo)."""
        line = _line(self.fit)
        return None if line is None else _bpm(line[0])

    def beat_at(self, time_s: float) -> float | None:
        """Quarter notes since the song's start at `time_s`, on the fitted line."""
        line = _line(self.fit)
        if line is None or line[0] <= 0:
            return None
        seconds_per_pulse, origin_s = line
        return (time_s - origin_s) / seconds_per_pulse / PULSES_PER_QUARTER

    def time_of_beat(self, beat: float) -> float | None:
        line = _line(self.fit)
        if line is None or line[0] <= 0:
            return None
        seconds_per_pulse, origin_s = line
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

    def place(self, beat: float) -> float:
        """The beat an onset at `beat` is moved to."""
        if self.strength <= 0:
            return beat
        step = DIVISIONS[self.division]
        index = round(beat / step)
        lines = [(i, i * step + (self.swing * step if i % 2 else 0.0)) for i in (index - 1, index, index + 1)]
        nearest = min((abs(line - beat), line) for _, line in lines)[1]
        return beat + self.strength * (nearest - beat)
