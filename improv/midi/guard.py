"""The output guard: every note improv sends goes through it, so every note-on it sent can get its
note-off on any way out (the player's panic, a signal, an engine error, a lost port)."""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Callable

from improv.errors import PortError
from improv.midi.messages import CC_ALL_NOTES_OFF, CC_SUSTAIN, NOTE_OFF, NOTE_ON, control_bytes, note_bytes
from improv.midi.ports import OutputPort

log = logging.getLogger("improv")


ECHOES_KEPT = 1024  # messages sent that an echo is looked for among (a few seconds of a dense answer)


def _echo_key(data: list[int]) -> tuple[int, ...]:
    """A message as it would come back: a note-off in either form, with either velocity, is one."""
    kind = data[0] & 0xF0
    if kind == NOTE_OFF or (kind == NOTE_ON and len(data) > 2 and data[2] == 0):
        return (NOTE_OFF | (data[0] & 0x0F), data[1] if len(data) > 1 else 0)
    return tuple(data)


class EchoFilter:
    """Recognises improv's own output coming back on its input (a DAW that monitors improv's track
    into improv's input): a message identical to one improv sent (a note: the same note, channel
    and velocity) within `window_s` of its sending is an echo. So is, however late, the note-off of
    a note whose note-on came back, once improv has sent that note-off (before then, a note-off of
    that pitch is the player's). A window of 0 turns it off."""

    def __init__(self, window_s: float):
        self.window_s = window_s
        self.sent_recently: deque[tuple[float, tuple[int, ...]]] = deque(maxlen=ECHOES_KEPT)
        # (channel, pitch) whose note-on came back -> improv has sent its note-off since
        self.echoed_notes: dict[tuple[int, int], bool] = {}
        self.count = 0

    def sent(self, data: list[int], time_s: float) -> None:
        if self.window_s <= 0 or not data:
            return
        key = _echo_key(data)
        self.sent_recently.append((time_s, key))
        if len(key) == 2 and (key[0] & 0x0F, key[1]) in self.echoed_notes:
            self.echoed_notes[(key[0] & 0x0F, key[1])] = True

    def is_echo(self, data: list[int], time_s: float) -> bool:
        if self.window_s <= 0 or not data:
            return False
        key = _echo_key(data)
        is_off = len(key) == 2 and key[0] & 0xF0 == NOTE_OFF
        note = (key[0] & 0x0F, key[1]) if len(key) >= 2 else None
        recent = self.sent_recently
        while recent and recent[0][0] < time_s - self.window_s:
            recent.popleft()  # input comes in time order: older sends can no longer come back
        for index, (sent_s, sent_key) in enumerate(recent):
            if sent_key == key and abs(time_s - sent_s) <= self.window_s:
                del recent[index]
                break
        else:
            if is_off and self.echoed_notes.get(note):
                del self.echoed_notes[note]  # the late note-off of a note that came back
                self.count += 1
                return True
            return False
        if is_off:
            self.echoed_notes.pop(note, None)
        elif key[0] & 0xF0 == NOTE_ON:
            self.echoed_notes[note] = False
        self.count += 1
        return True


class OutputGuard:
    """Every note sent goes through here, so every note-on can get its note-off on any way out.
    With `echoes`, every message sent is remembered there with the time it leaves, so that the
    daemon can recognise it if it comes back on the input."""

    def __init__(self, port: OutputPort | None, channel: int, echoes: EchoFilter | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.port, self.channel = port, channel
        self.sounding: set[tuple[int, int]] = set()  # (channel, pitch)
        self.failed = False
        self.echoes, self.clock = echoes, clock

    def send(self, data: list[int], due_s: float | None = None) -> bool:
        """Send now, or at `due_s` where the port can place a message at its time."""
        channel, kind = data[0] & 0x0F, data[0] & 0xF0
        if kind == NOTE_ON and data[2] > 0:
            self.sounding.add((channel, data[1]))  # tracked before sending: it may sound even if send fails
        if self.port is None:
            return False  # no output port right now: it is reconnected when it comes back
        try:
            self.port.send(data, due_s)
            self.failed = False
            if self.echoes is not None:
                now = self.clock()
                self.echoes.sent(data, now if due_s is None else max(due_s, now))
            if kind in (NOTE_OFF, NOTE_ON) and not (kind == NOTE_ON and data[2] > 0):
                self.sounding.discard((channel, data[1]))  # forgotten only once its note-off went out
            return True
        except PortError as err:
            if not self.failed:
                log.error("%s; improv keeps running and will send again when the port is back", err)
            self.failed = True
            return False

    def release_notes(self) -> None:
        """A note-off for each sounding note: what lifting every key sends, and no more."""
        for channel, pitch in sorted(self.sounding):
            self.send(note_bytes(channel, pitch, 0))

    def release_all(self) -> None:
        """A note-off for each sounding note, then sustain up and all-notes-off on each channel used."""
        channels = {self.channel} | {c for c, _ in self.sounding}
        self.release_notes()
        for channel in sorted(channels):
            self.send(control_bytes(channel, CC_SUSTAIN, 0))
            self.send(control_bytes(channel, CC_ALL_NOTES_OFF, 0))
        self.sounding.clear()
