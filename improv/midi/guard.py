"""The output guard: every note improv sends goes through it, so every note-on it sent can get its
note-off on any way out (the player's panic, a signal, an engine error, a lost port)."""

from __future__ import annotations

import logging

from improv.errors import PortError
from improv.midi.messages import CC_ALL_NOTES_OFF, CC_SUSTAIN, NOTE_OFF, NOTE_ON, control_bytes, note_bytes
from improv.midi.ports import OutputPort

log = logging.getLogger("improv")


class OutputGuard:
    """Every note sent goes through here, so every note-on can get its note-off on any way out."""

    def __init__(self, port: OutputPort | None, channel: int):
        self.port, self.channel = port, channel
        self.sounding: set[tuple[int, int]] = set()  # (channel, pitch)
        self.failed = False

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
