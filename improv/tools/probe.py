"""The test and benchmark keyboard-and-synth, and helpers to read what it heard. Developer tools:
`improv run` never imports this."""

from __future__ import annotations

import time
from typing import Callable

from improv.errors import PortError
from improv.midi.backend import virtual_port_names
from improv.midi.jack import JackMidiClient, available
from improv.midi.messages import CC_ALL_NOTES_OFF, CC_ALL_SOUND_OFF, CONTROL_CHANGE, NOTE_OFF, NOTE_ON
from improv.midi.ports import PORT_SETTLE_S


class ProbeClient:
    """A keyboard and a synth, for tests and the benchmark: two JACK clients, "NAME-keys" with an
    output "keys" that plays into improv, and "NAME-synth" with an input "synth" that records what
    improv plays. They are improv's own native clients (improv.midi.jack), so no Python runs on
    JACK's thread, and a message arriving is stamped with the start of its JACK cycle: the moment a
    synth would play it, whatever the Python reader thread's wake-up delay."""

    def __init__(self, name: str = "probe", clock: Callable[[], float] = time.monotonic):
        if not available():
            raise PortError("the test and benchmark probe needs improv's native JACK client: reinstall improv "
                            "with a C compiler (pip install -e .)")
        self.clock = clock
        self.received: list[tuple[float, list[int]]] = []
        self._drained = 0
        self.keys = JackMidiClient(f"{name}-keys", clock, in_name=None, out_name="keys")
        try:
            self.synth = JackMidiClient(f"{name}-synth", clock, in_name="synth", out_name=None)
        except BaseException:
            self.keys.close()
            raise
        self.synth.listen(lambda raw: self.received.append((raw.time_s, raw.data)))

    def connect(self, to_port: str | None = None, from_port: str | None = None, timeout_s: float = 15.0) -> None:
        """Connect to improv's ports, the first whose names start with `to_port` and `from_port`
        (by default those `improv run` opens on JACK), waiting for them to appear."""
        if to_port is None or from_port is None:
            to_port, from_port = virtual_port_names("jack")
        deadline, refused = self.clock() + timeout_s, None
        while self.clock() < deadline:
            inputs = [p for p in self.keys.peers("out") if p.startswith(to_port)]
            outputs = [p for p in self.synth.peers("in") if p.startswith(from_port)]
            if inputs and outputs:
                try:
                    self.keys.connect("out", inputs[0])
                    self.synth.connect("in", outputs[0])
                    time.sleep(PORT_SETTLE_S)
                    return
                except PortError as err:  # a client's ports exist a moment before JACK lets them connect
                    refused = err
            time.sleep(0.05)
        raise PortError(f"could not connect to ports {to_port}/{from_port} within {timeout_s} s"
                        + (f": {refused}" if refused else ": they did not appear"))

    def send(self, *data: int) -> float:
        """Send in the next JACK cycle; returns the time it was handed over. Raises PortError for a
        message longer than the client carries (12 bytes)."""
        self.keys.send(list(data))
        return self.clock()

    def last_sent_s(self, timeout_s: float = 1.0) -> float | None:
        """When the last message sent entered JACK: the start of the cycle that carried it, which is
        how arrivals are stamped, so the two differ by whole periods. None while it has not left.
        `send` returns earlier, up to a period: a message waits for the keys client's next cycle."""
        deadline = self.clock() + timeout_s
        while self.keys.unsent() and self.clock() < deadline:
            time.sleep(self.keys.period_s)
        return None if self.keys.unsent() else self.keys.last_out_s()

    def late_between(self, start_s: float, end_s: float) -> bool:
        """True if a JACK cycle began late (over 1.5 periods after the one before) in (start_s, end_s]:
        the machine, not the program measured, decided the timing there. A cycle stamped `end_s` may
        read back microseconds later (the clock offset is re-read each second): half a period of slack
        is safe, as the next cycle is a whole period away."""
        end_s += self.synth.period_s / 2
        return any(start_s < late_s <= end_s for late_s in self.synth.late_cycles_s())

    def play(self, pitches, note_s: float = 0.15, gap_s: float = 0.05, velocity: int = 90) -> float:
        """Play a phrase in real time; returns when the last key up was handed over (`last_sent_s`
        then says when it entered JACK)."""
        last_up = self.clock()
        for pitch in pitches:
            self.send(NOTE_ON, pitch, velocity)
            time.sleep(note_s)
            last_up = self.send(NOTE_OFF, pitch, 0)
            time.sleep(gap_s)
        return last_up

    def pending(self) -> list[tuple[float, list[int]]]:
        """What arrived since the last drain, without consuming it."""
        return self.received[self._drained :]

    def drain(self) -> list[tuple[float, list[int]]]:
        out = self.received[self._drained :]
        self._drained += len(out)
        return out

    def close(self) -> None:
        self.keys.close()
        self.synth.close()

def note_ons(events: list[tuple[float, list[int]]]) -> list[tuple[float, list[int]]]:
    return [(t, m) for t, m in events if m[0] & 0xF0 == NOTE_ON and m[2] > 0]

def sounding_after(events: list[tuple[float, list[int]]]) -> set[int]:
    """Pitches left sounding after these events: a note-on with no later note-off or all-notes-off."""
    sounding: set[int] = set()
    for _, m in events:
        kind = m[0] & 0xF0
        if kind == NOTE_ON and m[2] > 0:
            sounding.add(m[1])
        elif kind in (NOTE_OFF, NOTE_ON):
            sounding.discard(m[1])
        elif kind == CONTROL_CHANGE and m[1] in (CC_ALL_SOUND_OFF, CC_ALL_NOTES_OFF):
            sounding.clear()
    return sounding
