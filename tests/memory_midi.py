"""An in-memory MIDI system for driving the daemon without a MIDI server: a test plays into improv's
inputs and reads what improv sent, and can unplug a port (or the whole server) and plug it back."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable

from improv.errors import PortError
from improv.midi.messages import RawInput, is_note


class MemoryPort:
    def __init__(self, system: "MemoryMidi", name: str, wanted: str | None):
        self.system, self.name, self.wanted = system, name, wanted
        self.closed = False

    def still_connected(self) -> bool:
        return self.wanted is None or self.wanted in self.system.present

    def server_gone(self) -> bool:
        return self.system.gone

    def close(self) -> None:
        self.closed = True


class MemoryInput(MemoryPort):
    def __init__(self, system: "MemoryMidi", name: str, wanted: str | None, enqueue):
        super().__init__(system, name, wanted)
        self.enqueue = enqueue
        self.pulses: deque[float] = deque()  # clock pulse times a test puts here, for clock_pulses

    def clock_pulses(self) -> list[float]:
        return [self.pulses.popleft() for _ in range(len(self.pulses))]


class MemoryOutput(MemoryPort):
    handover_s = 0.0

    def send(self, data: list[int], due_s: float | None = None) -> None:
        if self.closed or self.system.gone or not self.still_connected():
            raise PortError(f"cannot send to {self.name}: it went away")
        now = self.system.clock()
        with self.system.lock:
            self.system.sent.append((now, list(data)))
            self.system.dues.append((now, due_s, list(data)))
        looped = self.system.loopback_s is not None and (not self.system.loopback_notes_only or is_note(data))
        if looped:  # the output routed back into improv's input, as a DAW may
            self.system.deliver(RawInput((now if due_s is None else max(now, due_s)) + self.system.loopback_s,
                                         list(data)))


class MemoryMidi:
    """The daemon's MidiSystem, in memory. `present` holds the names of other programs' ports that
    improv can connect to by name; `gone` plays a server that stopped."""

    name = "memory"

    def __init__(self, present=("keys", "synth"), clock: Callable[[], float] = time.monotonic):
        self.present, self.clock = set(present), clock
        self.gone = False
        self.inputs: list[MemoryInput] = []
        self.outputs: list[MemoryOutput] = []
        self.sent: list[tuple[float, list[int]]] = []
        self.dues: list[tuple[float, float | None, list[int]]] = []  # (when sent, the due time given, message)
        self.loopback_s: float | None = None  # a number: what improv sends comes back this much later
        self.loopback_notes_only = False
        self.lock = threading.Lock()

    def _check(self, port: str | None) -> None:
        if self.gone:
            raise PortError("the memory MIDI server is gone")
        if port is not None and port not in self.present:
            raise PortError(f"no MIDI port matches {port!r}")

    def open_input(self, client_name, port, enqueue, clock) -> MemoryInput:
        self._check(port)
        self.inputs.append(MemoryInput(self, port or f"{client_name}:in", port, enqueue))
        return self.inputs[-1]

    def open_output(self, client_name, port, clock) -> MemoryOutput:
        self._check(port)
        self.outputs.append(MemoryOutput(self, port or f"{client_name}:out", port))
        return self.outputs[-1]

    def play(self, *data: int) -> float:
        """Deliver a message to every open input, as the MIDI system's callback would; returns its time."""
        now = self.clock()
        self.deliver(RawInput(now, list(data)))
        return now

    def deliver(self, raw: RawInput) -> None:
        for port in self.inputs:
            if not port.closed and port.still_connected() and not self.gone:
                port.enqueue(raw)

    def phrase(self, pitches, note_s: float = 0.05, velocity: int = 90, channel: int = 0) -> float:
        """Play notes one after another in real time; returns when the last key came up."""
        last_up = self.clock()
        for pitch in pitches:
            self.play(0x90 | channel, pitch, velocity)
            time.sleep(note_s)
            last_up = self.play(0x80 | channel, pitch, 0)
        return last_up

    def received(self, since_s: float = float("-inf")) -> list[tuple[float, list[int]]]:
        with self.lock:
            return [(t, m) for t, m in self.sent if t >= since_s]
