"""Keys and scales, and the player's key detected live. Pure.

A key is a tonic and a scale: `C:major`, `A:minor`, `D:dorian`, `F#:blues`; or any set of pitch
classes, `custom:0,2,4,7,9` (0 = C). `auto` follows the key the player is heard in, `none` leaves
improv free. Improv's out-of-key NOTE_ONs are masked (strength 1) or damped by a logit penalty of
log(1 - strength) (below 1; 0 changes nothing): see `Key.penalty`.

Detection (Krumhansl-Schmuckler, with Temperley's Kostka-Payne profiles): each note the player
plays adds its duration to its pitch class in a histogram that decays with time; the key is the
major or minor key whose profile correlates best with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Semitones above the tonic.
SCALES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),  # natural minor
    "harmonic-minor": (0, 2, 3, 5, 7, 8, 11),
    "melodic-minor": (0, 2, 3, 5, 7, 9, 11),  # ascending
    "ionian": (0, 2, 4, 5, 7, 9, 11),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
    "lydian": (0, 2, 4, 6, 7, 9, 11),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "aeolian": (0, 2, 3, 5, 7, 8, 10),
    "locrian": (0, 1, 3, 5, 6, 8, 10),
    "major-pentatonic": (0, 2, 4, 7, 9),
    "minor-pentatonic": (0, 3, 5, 7, 10),
    "blues": (0, 3, 5, 6, 7, 10),
}
NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_LETTERS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
AUTO, NONE, CUSTOM = "auto", "none", "custom"
KEY_SYNTAX = ("TONIC:SCALE (tonic C, C#, Db, ... B; scale " + ", ".join(SCALES) + "), custom:PC,PC,... "
              "(pitch classes 0..11, 0 = C), custom (with key.pitch_classes), auto or none")

# Temperley (2007): how often each scale degree sounds in the Kostka-Payne corpus, tonic first. On
# the 98 held-out pieces these agree with music21's key more often than Krumhansl-Kessler's
# probe-tone ratings did (76 against 61 weighted by duration, 67 against 66 counting note-ons).
MAJOR_PROFILE = (0.748, 0.060, 0.488, 0.082, 0.670, 0.460, 0.096, 0.715, 0.104, 0.366, 0.057, 0.400)
MINOR_PROFILE = (0.712, 0.084, 0.474, 0.618, 0.049, 0.460, 0.105, 0.747, 0.404, 0.067, 0.133, 0.330)
HALF_LIFE_S = 30.0  # the live detector: a note heard this long ago counts half
LONGEST_WEIGHT_S = 4.0  # a note held longer counts as this long (a key left down is not the tonic)


@dataclass(frozen=True)
class Key:
    """Pitch classes improv keeps to, named for people."""

    name: str  # "C:major", "custom:0,2,4,7,9"
    pitch_classes: frozenset[int]
    tonic: int | None = None
    scale: str | None = None

    def contains(self, pitch: int) -> bool:
        return pitch % 12 in self.pitch_classes

    def out_of_key(self) -> np.ndarray:
        """A boolean mask over the 128 MIDI pitches: True where the pitch is not in the key."""
        return np.array([p % 12 not in self.pitch_classes for p in range(128)], dtype=bool)

    def __str__(self) -> str:
        return self.name


def make_key(tonic: int, scale: str) -> Key:
    return Key(f"{NOTE_NAMES[tonic % 12]}:{scale}", frozenset((tonic + i) % 12 for i in SCALES[scale]),
               tonic % 12, scale)


def parse_tonic(text: str) -> int:
    text = text.strip()
    if not text or text[0].upper() not in _LETTERS:
        raise ValueError(f"{text!r} is not a tonic (C, C#, Db, ... B)")
    pc = _LETTERS[text[0].upper()]
    for accidental in text[1:]:
        if accidental in "#♯":
            pc += 1
        elif accidental in "b♭":
            pc -= 1
        else:
            raise ValueError(f"{text!r} is not a tonic (C, C#, Db, ... B)")
    return pc % 12


def custom_key(pitch_classes) -> Key:
    pcs = sorted({int(pc) for pc in pitch_classes})
    if not pcs or any(not 0 <= pc <= 11 for pc in pcs):
        raise ValueError(f"a custom key needs pitch classes 0..11, got {list(pitch_classes)!r}")
    return Key(f"{CUSTOM}:{','.join(map(str, pcs))}", frozenset(pcs))


def parse_key(name: str, pitch_classes=None) -> Key | str | None:
    """A Key, AUTO, or None (no key). ValueError saying what is allowed otherwise."""
    text = name.strip()
    lowered = text.lower()
    if lowered == NONE:
        return None
    if lowered == AUTO:
        return AUTO
    if lowered == CUSTOM:
        if not pitch_classes:
            raise ValueError("custom needs key.pitch_classes, e.g. [0, 2, 4, 7, 9]")
        return custom_key(pitch_classes)
    tonic_text, sep, scale = text.partition(":")
    if not sep:
        raise ValueError(f"{name!r} is not a key; give {KEY_SYNTAX}")
    if tonic_text.lower() == CUSTOM:
        try:
            return custom_key(int(pc) for pc in scale.split(","))
        except ValueError as err:
            raise ValueError(f"{name!r}: {err if 'custom key' in str(err) else 'pitch classes must be 0..11'}") from err
    scale = scale.strip().lower().replace(" ", "-").replace("_", "-")
    scale = {"natural-minor": "minor"}.get(scale, scale)
    if scale not in SCALES:
        raise ValueError(f"{name!r}: unknown scale {scale!r}; scales: {', '.join(SCALES)}")
    return make_key(parse_tonic(tonic_text), scale)


def penalty(strength: float) -> float:
    """The logit added to out-of-key NOTE_ONs below strength 1: log(1 - strength) (0 at strength 0)."""
    return math.log1p(-strength) if strength < 1 else float("-inf")


def _profiles() -> np.ndarray:
    """24 rows: the major profile rotated to each tonic, then the minor; centred for correlation."""
    rows = [np.roll(MAJOR_PROFILE, tonic) for tonic in range(12)] + [np.roll(MINOR_PROFILE, tonic) for tonic in range(12)]
    profiles = np.array(rows, dtype=np.float64)
    profiles -= profiles.mean(axis=1, keepdims=True)
    return profiles / np.linalg.norm(profiles, axis=1, keepdims=True)


_PROFILES = _profiles()


def best_key(histogram) -> tuple[Key | None, float]:
    """The major or minor key whose Krumhansl-Kessler profile correlates best with a pitch-class
    histogram, and that correlation; (None, 0) for a flat or empty histogram."""
    h = np.asarray(histogram, dtype=np.float64)
    h = h - h.mean()
    norm = np.linalg.norm(h)
    if norm == 0:
        return None, 0.0
    scores = _PROFILES @ (h / norm)
    index = int(np.argmax(scores))
    return make_key(index % 12, "major" if index < 12 else "minor"), float(scores[index])


class KeyDetector:
    """The player's key, live: each note, when its key comes up, adds how long it was held (at most
    LONGEST_WEIGHT_S) to its pitch class; the histogram halves every `half_life_s` seconds (None:
    never), so a modulation is followed within a phrase or two. `key` is recomputed on each key up
    (24 dot products of 12 numbers)."""

    def __init__(self, half_life_s: float | None = HALF_LIFE_S):
        self.half_life_s = half_life_s
        self.histogram = np.zeros(12)
        self.onsets: dict[int, float] = {}
        self.last_s: float | None = None
        self.key: Key | None = None
        self.notes = 0

    def clear(self) -> None:
        self.histogram[:] = 0
        self.onsets.clear()
        self.last_s, self.key, self.notes = None, None, 0

    def note_on(self, time_s: float, pitch: int) -> None:
        self.onsets.setdefault(pitch, time_s)

    def note_off(self, time_s: float, pitch: int) -> Key | None:
        onset = self.onsets.pop(pitch, None)
        if onset is not None:
            self.add(time_s, pitch, min(max(time_s - onset, 0.0), LONGEST_WEIGHT_S))
        return self.key

    def add(self, time_s: float, pitch: int, weight: float) -> Key | None:
        """`weight` (seconds of sound) more for `pitch`'s class at `time_s`."""
        if self.half_life_s is not None and self.last_s is not None and time_s > self.last_s:
            self.histogram *= 0.5 ** ((time_s - self.last_s) / self.half_life_s)
        if self.last_s is None or time_s > self.last_s:
            self.last_s = time_s
        self.histogram[pitch % 12] += weight
        self.notes += 1
        self.key, _ = best_key(self.histogram)
        return self.key
