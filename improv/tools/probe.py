"""The test and benchmark keyboard-and-synth, and helpers to read what it heard. Developer tools:
`improv run` never imports this."""

from __future__ import annotations

import bisect
import heapq
import itertools
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from improv.errors import PortError
from improv.midi.backend import virtual_port_names
from improv.midi.jack import JackMidiClient, available
from improv.midi.messages import (CC_ALL_NOTES_OFF, CC_ALL_SOUND_OFF, CLOCK_PULSE, CONTINUE, CONTROL_CHANGE, NOTE_OFF,
                                  NOTE_ON, SONG_POSITION, START, STOP, RawInput)
from improv.midi.ports import PORT_SETTLE_S

PULSES_PER_QUARTER = 24  # MIDI clock
# The clock is handed to its JACK output this far ahead of its due times, from a background thread:
# far enough that the thread waking late moves nothing, near enough that minutes of clock are never
# queued at once (the output's ring holds limits.ring_size messages, and keeps them in order).
CLOCK_LOOKAHEAD_S = 0.25
CLOCK_HANDOVER_EVERY_S = 0.02
# A tempo: beats per minute, a function of the seconds since the clock's start, or (seconds, bpm)
# points it moves between in straight lines (and holds before the first and after the last).
Tempo = float | Callable[[float], float] | Sequence[tuple[float, float]]


def tempo_function(bpm: Tempo) -> Callable[[float], float]:
    """The tempo as a function of the seconds since the clock's start."""
    if callable(bpm):
        return bpm
    if isinstance(bpm, (int, float)):
        return lambda _s: float(bpm)
    points = sorted(bpm)
    times_s = [t for t, _ in points]

    def ramp(t_s: float) -> float:
        i = bisect.bisect_right(times_s, t_s)
        if i == 0 or i == len(points):
            return points[min(i, len(points) - 1)][1]
        (t0, b0), (t1, b1) = points[i - 1], points[i]
        return b0 + (b1 - b0) * (t_s - t0) / (t1 - t0)

    return ramp


def pulse_times(bpm: Tempo, seconds: float, start_s: float, jitter_ms: float = 0.0, rng: random.Random | None = None,
                jitter: str = "uniform") -> list[float]:
    """The due times of `seconds` of MIDI clock from `start_s`, 24 pulses a quarter note: each pulse
    a pulse length (at the tempo where it falls) after the one before, then moved by its own jitter,
    uniform in +-jitter_ms or Gaussian with jitter_ms as its deviation ("gauss"). A jittered pulse
    never goes before the one before it (JACK keeps a port's messages in order)."""
    if jitter not in ("uniform", "gauss"):
        raise ValueError(f"jitter is 'uniform' or 'gauss', not {jitter!r}")
    tempo, rng = tempo_function(bpm), rng or random.Random(0)
    jitter_s = jitter_ms / 1000
    dues: list[float] = []
    t_s = 0.0
    while t_s < seconds - 1e-9:  # a pulse that rounding puts a hair before the end is the next clock's
        moved_s = 0.0
        if jitter_s:
            moved_s = rng.uniform(-jitter_s, jitter_s) if jitter == "uniform" else rng.gauss(0.0, jitter_s)
        dues.append(max(start_s + t_s + moved_s, dues[-1] if dues else float("-inf")))
        t_s += 60.0 / (PULSES_PER_QUARTER * tempo(t_s))
    return dues


class TimedSender:
    """Messages for one JACK output, each at its exact due time, handed over CLOCK_LOOKAHEAD_S ahead
    from a background thread, in due order, never more than half the output's ring at once."""

    def __init__(self, client: JackMidiClient, clock: Callable[[], float]):
        self.client, self.clock = client, clock
        self._pending: list[tuple[float, int, list[int]]] = []  # a heap of (due, order given, message)
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self.failures: list[PortError] = []
        self.late: list[float] = []  # due times of messages handed over too late to be sure of their frame
        self._thread = threading.Thread(target=self._run, name=f"{client.name}-sender", daemon=True)
        self._thread.start()

    def schedule(self, messages: Iterable[tuple[float, list[int]]]) -> None:
        """(due time, message) pairs; at equal times, in the order given."""
        with self._lock:
            for due_s, data in messages:
                heapq.heappush(self._pending, (due_s, next(self._order), list(data)))
        self._wake.set()

    def clear(self) -> None:
        """Drop what is not handed over yet (what is goes out)."""
        with self._lock:
            self._pending.clear()

    def unsent(self) -> int:
        with self._lock:
            return len(self._pending) + self.client.unsent()

    def _run(self) -> None:
        while not self._closed:
            self._hand_over()
            self._wake.wait(CLOCK_HANDOVER_EVERY_S)
            self._wake.clear()

    def _hand_over(self) -> None:
        horizon_s = self.clock() + CLOCK_LOOKAHEAD_S
        with self._lock:
            room = self.client.limits.ring_size // 2 - self.client.unsent()
            while self._pending and self._pending[0][0] <= horizon_s and room > 0 and not self._closed:
                due_s, _, data = heapq.heappop(self._pending)
                if self.clock() > due_s - self.client.handover_s:
                    self.late.append(due_s)  # the thread woke too late: this one may leave after its frame
                try:
                    self.client.send(data, due_s)
                except PortError as err:  # kept for the test to see: the probe's own transport failed
                    self.failures.append(err)
                room -= 1

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=2.0)
        self.client.close()


class ProbeClient:
    """A keyboard and a synth, for tests and the benchmark: two JACK clients, "NAME-keys" with an
    output "keys" that plays into improv, and "NAME-synth" with an input "synth" that records what
    improv plays. They are improv's own native clients (improv.midi.jack), so no Python runs on
    JACK's thread, and a message arriving is stamped with the start of its JACK cycle: the moment a
    synth would play it, whatever the Python reader thread's wake-up delay; and with its own frame
    time (`drain_at`), to the frame. MIDI clock and transport (`send_clock`, `send_stop`, ...) go
    out on a third client, "NAME-clock", opened when first used and connected where the keys are
    then, so that the clock queued ahead never holds up the keys."""

    def __init__(self, name: str = "probe", clock: Callable[[], float] = time.monotonic):
        if not available():
            raise PortError("the test and benchmark probe needs improv's native JACK client: reinstall improv "
                            "with a C compiler (pip install -e .)")
        self.name, self.clock = name, clock
        self.heard: list[RawInput] = []
        self._drained = 0
        self._clock_out: TimedSender | None = None
        self.keys = JackMidiClient(f"{name}-keys", clock, in_name=None, out_name="keys")
        try:
            self.synth = JackMidiClient(f"{name}-synth", clock, in_name="synth", out_name=None)
        except BaseException:
            self.keys.close()
            raise
        self.synth.listen(self.heard.append)

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
                    if self._clock_out is not None:
                        self._clock_out.client.connect("out", inputs[0])
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

    def send_at(self, due_s: float, *data: int) -> float:
        """Send on the keys at `due_s` exactly (at its frame); returns `due_s`. Messages the keys
        send after it, even at once, leave after it."""
        self.keys.send(list(data), due_s)
        return due_s

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

    @property
    def received(self) -> list[tuple[float, list[int]]]:
        """Everything heard, as (start of the cycle that carried it, message)."""
        return [(raw.time_s, raw.data) for raw in self.heard]

    def pending(self) -> list[tuple[float, list[int]]]:
        """What arrived since the last drain, without consuming it, stamped with the start of the
        cycle that carried it (when a synth would play it)."""
        return [(raw.time_s, raw.data) for raw in self.heard[self._drained :]]

    def drain(self) -> list[tuple[float, list[int]]]:
        return [(raw.time_s, raw.data) for raw in self._take()]

    def pending_at(self) -> list[tuple[float, list[int]]]:
        """As `pending`, but each message at its own frame time: for a message sent at a due time,
        that due time to the frame (a period earlier than the cycle's start)."""
        return [(raw.at_s, raw.data) for raw in self.heard[self._drained :]]

    def drain_at(self) -> list[tuple[float, list[int]]]:
        """As `drain`, each message at its own frame time (`pending_at`)."""
        return [(raw.at_s, raw.data) for raw in self._take()]

    def _take(self) -> list[RawInput]:
        out = self.heard[self._drained :]
        self._drained += len(out)
        return out

    # -- MIDI clock and transport, on their own client ------------------------------------------------
    def _clock_sender(self) -> TimedSender:
        """The clock's client, opened on first use and connected where the keys are (whoever connected them)."""
        if self._clock_out is None:
            client = JackMidiClient(f"{self.name}-clock", self.clock, in_name=None, out_name="clock")
            try:
                for port in self.keys.connections("out"):
                    client.connect("out", port)
            except BaseException:
                client.close()
                raise
            time.sleep(PORT_SETTLE_S)
            self._clock_out = TimedSender(client, self.clock)
        return self._clock_out

    def send_clock(self, bpm: Tempo, seconds: float, start_s: float | None = None, jitter_ms: float = 0.0,
                   rng: random.Random | None = None, start: bool = True, jitter: str = "uniform") -> list[float]:
        """Play `seconds` of MIDI clock (24 pulses a quarter note, see `pulse_times` for the tempo
        and the jitter) from `start_s` (by default a moment from now), with a Start just before
        the first pulse when `start`. Returns at once with the pulses' due times: each leaves at its
        frame. Due times under CLOCK_LOOKAHEAD_S from now may leave late."""
        if start_s is None:
            start_s = self.clock() + 2 * CLOCK_LOOKAHEAD_S
        dues = pulse_times(bpm, seconds, start_s, jitter_ms, rng, jitter)
        messages = [(min([start_s] + dues[:1]), [START])] if start else []
        self._clock_sender().schedule(messages + [(due_s, [CLOCK_PULSE]) for due_s in dues])
        return dues

    def send_transport(self, due_s: float, *data: int) -> float:
        """Send a message on the clock's client at `due_s`, in order with its pulses; returns `due_s`."""
        self._clock_sender().schedule([(due_s, list(data))])
        return due_s

    def send_start(self, due_s: float) -> float:
        return self.send_transport(due_s, START)

    def send_stop(self, due_s: float) -> float:
        return self.send_transport(due_s, STOP)

    def send_continue(self, due_s: float) -> float:
        return self.send_transport(due_s, CONTINUE)

    def send_song_position(self, sixteenths: int, due_s: float) -> float:
        """Song Position Pointer: where Continue goes on from, in sixteenth notes since the start."""
        if not 0 <= sixteenths < 1 << 14:
            raise ValueError(f"a song position is 0..16383 sixteenths, not {sixteenths}")
        return self.send_transport(due_s, SONG_POSITION, sixteenths & 0x7F, sixteenths >> 7)

    def stop_clock(self) -> None:
        """Drop the clock and transport not yet handed to JACK (at most CLOCK_LOOKAHEAD_S of it still
        goes out)."""
        if self._clock_out is not None:
            self._clock_out.clear()

    def wait_clock(self, timeout_s: float = 10.0) -> bool:
        """Wait until all the clock and transport scheduled has left; False at the timeout."""
        deadline = self.clock() + timeout_s
        while self._clock_out is not None and self._clock_out.unsent() and self.clock() < deadline:
            time.sleep(CLOCK_HANDOVER_EVERY_S)
        return self._clock_out is None or not self._clock_out.unsent()

    def clock_failures(self) -> list[PortError]:
        """Sends the clock's client refused (its ring full or closed): the probe's transport, not improv."""
        return [] if self._clock_out is None else list(self._clock_out.failures)

    def clock_late(self) -> set[float]:
        """Due times of clock and transport messages the probe's thread handed to JACK too late to be
        sure of their frame (the machine held it past CLOCK_LOOKAHEAD_S): the probe's transport."""
        return set() if self._clock_out is None else set(self._clock_out.late)

    def close(self) -> None:
        if self._clock_out is not None:
            self._clock_out.close()
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
