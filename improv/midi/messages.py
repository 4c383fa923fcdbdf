"""MIDI messages as bytes: the numbers improv uses, in one place, and the few byte helpers.

Standard library only, so the pure core (events, engine) and every edge can share it.
"""

from __future__ import annotations

from dataclasses import dataclass

NOTE_OFF, NOTE_ON, CONTROL_CHANGE = 0x80, 0x90, 0xB0  # status high nibbles; the low nibble is the channel
CC_SUSTAIN = 64
SUSTAIN_DOWN_MIN = 64  # MIDI convention: a CC 64 value of 64 or more is pedal down
CC_ALL_SOUND_OFF = 120
CC_ALL_NOTES_OFF = 123
FIRST_CHANNEL_MODE_CC = 120  # CC 120..127 are channel mode messages, never a setting's knob
PANIC_CONTROLS = (CC_ALL_SOUND_OFF, CC_ALL_NOTES_OFF)
DRUM_CHANNEL = 9  # channel 10 counted from 1: General MIDI's percussion, no pitches
# System messages for the session's clock: 24 pulses a quarter note, the transport, the position.
CLOCK_PULSE, START, CONTINUE, STOP = 0xF8, 0xFA, 0xFB, 0xFC
SONG_POSITION = 0xF2  # then the position in sixteenth notes, 14 bits, low 7 bits first
TIME_CODE = 0xF1  # MIDI time code quarter frame: improv drops it


@dataclass
class RawInput:
    """A raw message as the input callback saw it, with its times on the daemon's clock."""

    time_s: float  # when improv could first hear it (under JACK, the start of the cycle that carried it)
    data: list[int]
    at_s: float | None = None  # the message's own time where the port knows it (under JACK, its frame)


def note_bytes(channel: int, pitch: int, velocity: int) -> list[int]:
    """Note-on (velocity > 0) or note-off, channel 0..15."""
    if velocity > 0:
        return [NOTE_ON | channel, pitch, velocity]
    return [NOTE_OFF | channel, pitch, 0]


def control_bytes(channel: int, control: int, value: int) -> list[int]:
    return [CONTROL_CHANGE | channel, control, value]


def is_note(data: list[int]) -> bool:
    """A note-on or note-off (a note-on of velocity 0 is a note-off)."""
    return bool(data) and data[0] & 0xF0 in (NOTE_OFF, NOTE_ON)
