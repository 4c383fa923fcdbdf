"""The MIDI edge: the only code that touches python-rtmidi or libjack. Everything else sees bytes
and mido messages.

Backends: the ALSA sequencer on Linux, CoreMIDI on macOS, WinMM on Windows, and JACK when a JACK
server runs (`auto` prefers JACK then). Under JACK improv is one client, "improv", with ports
"in" and "out", whose process callback is native (improv/jackmidi.py); `jack-rtmidi`, or an
install without the native part, uses python-rtmidi's JACK backend instead. Through python-rtmidi
each input and output is its own client, so a graph or an ALSA patchbay shows "improv-in" and
"improv-out".

The input callback contract: it runs on the MIDI system's own thread (JACK's process thread under
JACK). It only timestamps the raw bytes and appends them to the input queue: no parsing, no
logging, no locks, never the model.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

import mido

from improv.errors import PortError

os.environ.setdefault("JACK_NO_START_SERVER", "1")  # probing for JACK must never start a server

CC_ALL_SOUND_OFF = 120
CC_RESET_CONTROLLERS = 121
CC_ALL_NOTES_OFF = 123
CC_SUSTAIN = 64
PORT_SETTLE_S = 0.2  # a new connection carries messages only from the next cycles on: wait before the first
CALLBACK_SETTLE_S = 0.02  # no input callback for this long after the port is gone: the last has ended
CALLBACK_QUIET_WINDOWS = 3
CALLBACK_DRAIN_LIMIT_S = 2.0

NO_MIDI_HELP = {
    "linux": "start the ALSA sequencer (sudo modprobe snd-seq) or a JACK server "
             "(jackd -d dummy -r 48000 -p 64, or your sound card's driver instead of dummy)",
    "darwin": "CoreMIDI should always be there: check that python-rtmidi installed correctly",
    "win32": "WinMM should always be there: check that python-rtmidi installed correctly",
}


def _rtmidi():
    try:
        import rtmidi
    except ImportError as err:  # pragma: no cover - a broken install
        raise PortError(f"python-rtmidi is not importable ({err}); pip install python-rtmidi") from err
    return rtmidi


@contextlib.contextmanager
def quiet_stderr():
    """JACK and ALSA print to fd 2 when a probe fails; the user gets improv's one message instead."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _api_constants() -> dict[str, int]:
    rtmidi = _rtmidi()
    return {"alsa": rtmidi.API_LINUX_ALSA, "jack": rtmidi.API_UNIX_JACK, "jack-rtmidi": rtmidi.API_UNIX_JACK,
            "coremidi": rtmidi.API_MACOSX_CORE, "winmm": rtmidi.API_WINDOWS_MM}


def _works(api: int) -> bool:
    rtmidi = _rtmidi()
    if api not in rtmidi.get_compiled_api():
        return False
    try:
        with quiet_stderr():
            probe = rtmidi.MidiOut(rtapi=api, name="improv-probe")
        probe.delete()
        return True
    except (rtmidi.RtMidiError, SystemError, OSError):
        return False


def choose_backend(backend: str = "auto") -> str:
    """The backend name to use; raises PortError saying what to install or start."""
    if backend != "auto":
        if not _works(_api_constants()[backend]):
            raise PortError(f"MIDI backend {backend!r} is not available here; {_help(backend)}")
        return backend
    candidates = ["jack"] + {"linux": ["alsa"], "darwin": ["coremidi"], "win32": ["winmm"]}.get(sys.platform, [])
    for name in candidates:
        if _works(_api_constants()[name]):
            return name
    raise PortError(f"no MIDI system is available: {NO_MIDI_HELP.get(sys.platform, 'start a JACK server')}")


@contextlib.contextmanager
def default_jack_server(name: str):
    """Clients opened inside (and processes started inside) talk to the JACK server `name`:
    libjack reads JACK_DEFAULT_SERVER at each client open."""
    saved = os.environ.get("JACK_DEFAULT_SERVER")
    os.environ["JACK_DEFAULT_SERVER"] = name
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("JACK_DEFAULT_SERVER", None)
        else:
            os.environ["JACK_DEFAULT_SERVER"] = saved


def jack_period_ms(server: str | None = None) -> float | None:
    """The period (buffer size / sample rate) in ms of the running JACK server (named `server`, or
    the default one), or None when it does not run. rtmidi does not expose it, so this asks libjack."""
    import ctypes

    if server is not None:
        with default_jack_server(server):
            return jack_period_ms()

    from improv.jackmidi import NO_START_SERVER, libjack

    jack = libjack()
    if jack is None:
        return None
    status = ctypes.c_int(0)
    with quiet_stderr():
        client = jack.jack_client_open(b"improv-period", NO_START_SERVER, ctypes.byref(status))
    if not client:
        return None
    try:
        return 1000.0 * jack.jack_get_buffer_size(client) / jack.jack_get_sample_rate(client)
    finally:
        jack.jack_client_close(client)


def _help(backend: str) -> str:
    if backend.startswith("jack"):
        return "start a JACK server first (jackd -d dummy -r 48000 -p 64)"
    if backend == "alsa":
        return "load the ALSA sequencer (sudo modprobe snd-seq)"
    return NO_MIDI_HELP.get(sys.platform, "check python-rtmidi")


def list_ports(backend: str) -> tuple[list[str], list[str]]:
    """(input port names, output port names) that improv can connect to."""
    rtmidi = _rtmidi()
    api = _api_constants()[backend]
    with quiet_stderr():
        midi_in, midi_out = rtmidi.MidiIn(rtapi=api, name="improv-list"), rtmidi.MidiOut(rtapi=api, name="improv-list")
    try:
        return midi_in.get_ports(), midi_out.get_ports()
    finally:
        midi_in.delete()
        midi_out.delete()


def find_port(wanted: str, available: list[str], direction: str) -> int:
    """Index of the port named `wanted`, or of the only one whose name contains it (any case)."""
    if wanted in available:
        return available.index(wanted)
    matches = [i for i, name in enumerate(available) if wanted.lower() in name.lower()]
    if len(matches) == 1:
        return matches[0]
    listing = ", ".join(repr(n) for n in available) or "none"
    if not matches:
        raise PortError(f"no MIDI {direction} port matches {wanted!r}; available: {listing} (see improv ports)")
    names = ", ".join(repr(available[i]) for i in matches)
    raise PortError(f"{wanted!r} matches several MIDI {direction} ports ({names}); give more of the name")


@dataclass
class RawInput:
    """A timestamped raw message as the callback saw it."""

    time_s: float
    data: list[int]


class _Port:
    """One rtmidi client with one port: virtual ("CLIENT-in:in") or connected to an existing port by name."""

    direction = ""  # "in" or "out"

    def __init__(self, backend: str, client_name: str, port: str | None):
        rtmidi = _rtmidi()
        kind, label = (rtmidi.MidiIn, "input") if self.direction == "in" else (rtmidi.MidiOut, "output")
        try:
            with quiet_stderr():
                self._rt = kind(rtapi=_api_constants()[backend], name=f"{client_name}-{self.direction}")
        except (rtmidi.RtMidiError, SystemError) as err:
            raise PortError(f"cannot open a MIDI {label} on {backend}: {err}; {_help(backend)}") from err
        if port is None:
            if backend == "winmm":
                raise PortError(f"Windows has no virtual MIDI ports: install a loopback driver (loopMIDI) and "
                                f"connect to it by name with --{self.direction}")
            self._rt.open_virtual_port(self.direction)
            self.name = f"{client_name}-{self.direction}:{self.direction}"
        else:
            available = self._rt.get_ports()
            index = find_port(port, available, label)
            self.name = available[index]
            self._rt.open_port(index)
        self.wanted = port

    def still_connected(self) -> bool:
        """For a port connected by name: is the port still there?"""
        if self.wanted is None:
            return True
        try:
            return self.name in self._rt.get_ports()
        except Exception:
            return False

    def server_gone(self) -> bool:
        return False  # python-rtmidi does not say

    def close(self) -> None:
        close_rtmidi(self._rt)


class InputPort(_Port):
    """A MIDI input whose callback only timestamps and enqueues (see the module docstring)."""

    direction = "in"

    def __init__(self, backend: str, client_name: str, port: str | None, enqueue: Callable[[RawInput], None],
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(backend, client_name, port)
        self._rt.ignore_types(sysex=True, timing=True, active_sense=True)  # dropped by rtmidi, before Python

        self.callbacks = 0  # written by the callback only; read when closing

        def callback(event, _data, enqueue=enqueue, clock=clock, raw=RawInput, port=self):
            enqueue(raw(clock(), event[0]))
            port.callbacks += 1

        self._rt.set_callback(callback)

    def close(self) -> None:
        close_rtmidi(self._rt, lambda: self.callbacks)


class OutputPort(_Port):
    direction = "out"
    handover_s = 0.0  # rtmidi sends at once: a message is handed over at its due time, not before

    def send(self, data: list[int], due_s: float | None = None) -> None:
        try:
            self._rt.send_message(data)
        except Exception as err:  # rtmidi raises its own types; the caller decides what a lost port means
            raise PortError(f"cannot send to {self.name}: {err}") from err


class _JackPort:
    """Improv's own JACK client's input or output (see improv.jackmidi): virtual, or connected to an
    existing port by name. Both directions share the one client."""

    direction = ""

    def __init__(self, client_name: str, port: str | None, clock: Callable[[], float] = time.monotonic):
        from improv.jackmidi import JackMidiClient

        self.client = JackMidiClient.acquire(client_name, clock)
        self.wanted, self.peer = port, None
        try:
            if port is not None:
                peers = self.client.peers(self.direction)
                self.peer = peers[find_port(port, peers, "input" if self.direction == "in" else "output")]
                self.client.connect(self.direction, self.peer)
        except BaseException:
            self.client.release()
            raise
        self.name = self.peer or self.client.port_name(self.direction)

    def still_connected(self) -> bool:
        """False once JACK has closed the client, or the port connected by name has gone."""
        if self.server_gone():
            return False
        return self.peer is None or self.client.connected_to(self.direction, self.peer)

    def server_gone(self) -> bool:
        """JACK has closed the client both directions share (its server stopped, or dropped it)."""
        return self.client.server_gone()

    def close(self) -> None:
        if self.peer is not None and not self.client.server_gone():
            self.client.disconnect(self.direction, self.peer)
        self.client.release()


class JackInputPort(_JackPort):
    direction = "in"

    def __init__(self, client_name: str, port: str | None, enqueue: Callable[[RawInput], None],
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(client_name, port, clock)
        self.client.listen(enqueue)

    def close(self) -> None:
        self.client.stop_listening()
        super().close()


class JackOutputPort(_JackPort):
    direction = "out"

    @property
    def handover_s(self) -> float:
        """Messages may be sent this long before they are due: the client places them exactly."""
        return self.client.handover_s

    def send(self, data: list[int], due_s: float | None = None) -> None:
        self.client.send(data, due_s)


def uses_native_jack(backend: str) -> bool:
    """True when `backend` is served by improv's own JACK client (built at install)."""
    if backend != "jack":
        return False
    from improv import jackmidi

    return jackmidi.available()


def open_input(backend: str, client_name: str, port: str | None, enqueue: Callable[[RawInput], None],
               clock: Callable[[], float] = time.monotonic) -> InputPort | JackInputPort:
    if uses_native_jack(backend):
        return JackInputPort(client_name, port, enqueue, clock)
    return InputPort(backend, client_name, port, enqueue, clock)


def open_output(backend: str, client_name: str, port: str | None,
                clock: Callable[[], float] = time.monotonic) -> OutputPort | JackOutputPort:
    if uses_native_jack(backend):
        return JackOutputPort(client_name, port, clock)
    return OutputPort(backend, client_name, port)


def virtual_port_names(backend: str, client_name: str = "improv") -> tuple[str, str]:
    """The (input, output) port names `improv run` opens when no port is named."""
    if uses_native_jack(backend):
        return f"{client_name}:in", f"{client_name}:out"
    return f"{client_name}-in:in", f"{client_name}-out:out"


def close_rtmidi(port, callbacks_so_far: Callable[[], int] | None = None) -> None:
    """Close an rtmidi port and its client without ever hanging the process.

    Closing a JACK client cancels its process thread. If that thread is inside a Python input
    callback waiting for the GIL, it dies holding the GIL's lock and the whole process hangs (or
    the callback runs on freed memory). So the port is unregistered first (nothing new arrives; the
    callback stays), the GIL is let go until the callbacks already under way have finished (a busy
    cycle can hold thousands; a callback still waiting for the GIL looks quiet for a window, so
    several quiet windows in a row are needed), and only then are the callback and the client
    dropped. If they never settle, the client is left open: a leak is better than a hang."""
    from rtmidi._rtmidi import MidiBase

    try:
        MidiBase.close_port(port)  # the base class's close keeps the callback, unlike MidiIn's
    except Exception:
        if callbacks_so_far is not None:
            return  # the port may still deliver: leave the client alone
    if callbacks_so_far is not None and not _callbacks_settled(callbacks_so_far):
        return
    with contextlib.suppress(Exception):
        port.close_port()
        port.delete()


def _callbacks_settled(callbacks_so_far: Callable[[], int]) -> bool:
    deadline = time.monotonic() + CALLBACK_DRAIN_LIMIT_S
    quiet = 0
    while time.monotonic() < deadline:
        before = callbacks_so_far()
        time.sleep(CALLBACK_SETTLE_S)
        quiet = quiet + 1 if callbacks_so_far() == before else 0
        if quiet >= CALLBACK_QUIET_WINDOWS:
            return True
    return False


class ProbeClient:
    """A keyboard and a synth, for tests and the benchmark: two JACK clients, "NAME-keys" with an
    output "keys" that plays into improv, and "NAME-synth" with an input "synth" that records what
    improv plays. They are improv's own native clients (improv.jackmidi), so no Python runs on
    JACK's thread, and a message arriving is stamped with the start of its JACK cycle: the moment a
    synth would play it, whatever the Python reader thread's wake-up delay."""

    def __init__(self, name: str = "probe", clock: Callable[[], float] = time.monotonic):
        from improv.jackmidi import JackMidiClient, available

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
            self.send(0x90, pitch, velocity)
            time.sleep(note_s)
            last_up = self.send(0x80, pitch, 0)
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
    return [(t, m) for t, m in events if m[0] & 0xF0 == 0x90 and m[2] > 0]


def sounding_after(events: list[tuple[float, list[int]]]) -> set[int]:
    """Pitches left sounding after these events: a note-on with no later note-off or all-notes-off."""
    sounding: set[int] = set()
    for _, m in events:
        kind = m[0] & 0xF0
        if kind == 0x90 and m[2] > 0:
            sounding.add(m[1])
        elif kind in (0x80, 0x90):
            sounding.discard(m[1])
        elif kind == 0xB0 and m[1] in (CC_ALL_SOUND_OFF, CC_ALL_NOTES_OFF):
            sounding.clear()
    return sounding


def parse(data: list[int]) -> mido.Message:
    """Raw bytes to a message; ValueError says what was wrong with a malformed one."""
    try:
        return mido.Message.from_bytes(data)
    except (ValueError, TypeError, IndexError, KeyError) as err:  # mido's errors for short or odd bytes vary
        raise ValueError(f"malformed MIDI message {bytes(data[:8]).hex(' ')}: {err!r}") from err


def note_bytes(channel: int, pitch: int, velocity: int) -> list[int]:
    """Note-on (velocity > 0) or note-off, channel 0..15."""
    if velocity > 0:
        return [0x90 | channel, pitch, velocity]
    return [0x80 | channel, pitch, 0]


def control_bytes(channel: int, control: int, value: int) -> list[int]:
    return [0xB0 | channel, control, value]
