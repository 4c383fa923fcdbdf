"""python-rtmidi's ports: the ALSA sequencer on Linux, CoreMIDI on macOS, WinMM on Windows, and
JACK as the `jack-rtmidi` backend (or where improv's own JACK client was not built). Each input and
output is its own client, so a graph or an ALSA patchbay shows "improv-in" and "improv-out".
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from typing import Callable

from improv.errors import PortError
from improv.midi.messages import CLOCK_PULSE, TIME_CODE, RawInput
from improv.midi.ports import Enqueue, backend_help, find_port, port_names, quiet_stderr

CALLBACK_SETTLE_S = 0.02  # no input callback for this long after the port is gone: the last has ended
CALLBACK_QUIET_WINDOWS = 3
CALLBACK_DRAIN_LIMIT_S = 2.0
PULSES_KEPT = 4096  # clock pulse times an input keeps unread (as improv's own JACK client): 34 s at 300 BPM


def _rtmidi():
    try:
        import rtmidi
    except ImportError as err:  # pragma: no cover - a broken install
        raise PortError(f"python-rtmidi is not importable ({err}); pip install python-rtmidi") from err
    return rtmidi

def api_constants() -> dict[str, int]:
    rtmidi = _rtmidi()
    return {"alsa": rtmidi.API_LINUX_ALSA, "jack": rtmidi.API_UNIX_JACK, "jack-rtmidi": rtmidi.API_UNIX_JACK,
            "coremidi": rtmidi.API_MACOSX_CORE, "winmm": rtmidi.API_WINDOWS_MM}

def works(api: int) -> bool:
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

def list_ports(backend: str) -> tuple[list[str], list[str]]:
    """(input port names, output port names) that improv can connect to."""
    rtmidi = _rtmidi()
    api = api_constants()[backend]
    with quiet_stderr():
        midi_in, midi_out = rtmidi.MidiIn(rtapi=api, name="improv-list"), rtmidi.MidiOut(rtapi=api, name="improv-list")
    try:
        return midi_in.get_ports(), midi_out.get_ports()
    finally:
        midi_in.delete()
        midi_out.delete()

def _open(direction: str, backend: str, client_name: str, port: str | None):
    """(an rtmidi client with one port, the port's name): virtual ("CLIENT-in:in") or connected to
    an existing port by name."""
    rtmidi = _rtmidi()
    kind, label = (rtmidi.MidiIn, "input") if direction == "in" else (rtmidi.MidiOut, "output")
    try:
        with quiet_stderr():
            rt = kind(rtapi=api_constants()[backend], name=f"{client_name}-{direction}")
    except (rtmidi.RtMidiError, SystemError) as err:
        raise PortError(f"cannot open a MIDI {label} on {backend}: {err}; {backend_help(backend)}") from err
    try:
        if port is None:
            if backend == "winmm":
                raise PortError(f"Windows has no virtual MIDI ports: install a loopback driver (loopMIDI) and "
                                f"connect to it by name with --{direction}")
            rt.open_virtual_port(direction)
            return rt, f"{client_name}-{direction}:{direction}"
        available = rt.get_ports()
        index = find_port(port, available, label)
        rt.open_port(index)
        return rt, available[index]
    except BaseException:
        with contextlib.suppress(Exception):
            rt.delete()  # no callback yet: nothing can be running in it
        raise

def _all_present(rt, names: list[str]) -> bool:
    """Does the MIDI system still list every port in `names`?"""
    if not names:
        return True
    try:
        present = rt.get_ports()
    except Exception:
        return False
    return all(name in present for name in names)

def _distinct_inputs(backend: str, wanted: list[str]) -> list[str]:
    """Several input names as the full names of distinct ports, all found before any is opened (a
    name that is not there opens nothing; two names of one port open it once). One name as given."""
    if len(wanted) < 2:
        return wanted
    available = list_ports(backend)[0]
    return list(dict.fromkeys(available[find_port(name, available, "input")] for name in wanted))

class _Port:
    """One rtmidi client with one port: virtual ("CLIENT-out:out") or connected to an existing port by name."""

    direction = ""  # "in" or "out"

    def __init__(self, backend: str, client_name: str, port: str | None):
        self._rt, self.name = _open(self.direction, backend, client_name, port)
        self.wanted = port

    def still_connected(self) -> bool:
        """For a port connected by name: is the port still there?"""
        return _all_present(self._rt, [] if self.wanted is None else [self.name])

    def server_gone(self) -> bool:
        return False  # python-rtmidi does not say

    def close(self) -> None:
        close_rtmidi(self._rt)

class RtMidiInput:
    """A MIDI input: a virtual port, or one rtmidi client per port named, all feeding the same
    `enqueue` and the same clock pulses. Each callback only timestamps and enqueues (see ports.py);
    a clock pulse (0xF8) is only appended, with its time, to the pulses `clock_pulses` drains."""

    def __init__(self, backend: str, client_name: str, port: str | list[str] | None, enqueue: Enqueue,
                 clock: Callable[[], float] = time.monotonic):
        self.wanted = port_names(port)
        # Bounded, so that a clock nobody reads cannot grow without end: the oldest go first.
        self._pulses: deque[float] = deque(maxlen=PULSES_KEPT)
        self._rts: list = []
        self._callbacks: list[int] = []  # per client, each written by its callback only; read when closing
        self._names: list[str] = []
        try:
            for wanted in _distinct_inputs(backend, self.wanted) or [None]:
                self._open_one(backend, client_name, wanted, enqueue, clock)
        except BaseException:
            self.close()
            raise
        self.name = ", ".join(self._names)

    def _open_one(self, backend: str, client_name: str, port: str | None, enqueue: Enqueue,
                  clock: Callable[[], float]) -> None:
        rt, name = _open("in", backend, client_name, port)
        self._rts.append(rt)
        self._names.append(name)
        self._callbacks.append(0)
        # Sysex and active sensing are dropped by rtmidi, before Python; timing is let through for
        # the clock, and MIDI time code (which comes with it) is dropped in the callback.
        rt.ignore_types(sysex=True, timing=False, active_sense=True)

        def callback(event, _data, enqueue=enqueue, clock=clock, raw=RawInput, pulses=self._pulses,
                     callbacks=self._callbacks, index=len(self._rts) - 1):
            now, data = clock(), event[0]
            if data[0] == CLOCK_PULSE:
                pulses.append(now)
            elif data[0] != TIME_CODE:
                enqueue(raw(now, data, now))
            callbacks[index] += 1

        rt.set_callback(callback)

    def clock_pulses(self) -> list[float]:
        """The times of the clock pulses received since the last call, oldest first (at most the
        last PULSES_KEPT)."""
        pulses = []
        with contextlib.suppress(IndexError):  # emptied; the callbacks may append meanwhile
            while True:
                pulses.append(self._pulses.popleft())
        return pulses

    def still_connected(self) -> bool:
        """For ports connected by name: is every one of them still there?"""
        return not self._rts or _all_present(self._rts[0], self._names if self.wanted else [])

    def server_gone(self) -> bool:
        return False  # python-rtmidi does not say

    def close(self) -> None:
        for index, rt in enumerate(self._rts):
            close_rtmidi(rt, lambda index=index: self._callbacks[index])
        self._rts = []

class RtMidiOutput(_Port):
    direction = "out"
    handover_s = 0.0  # rtmidi sends at once: a message is handed over at its due time, not before

    def send(self, data: list[int], due_s: float | None = None) -> None:
        try:
            self._rt.send_message(data)
        except Exception as err:  # rtmidi raises its own types; the caller decides what a lost port means
            raise PortError(f"cannot send to {self.name}: {err}") from err

def close_rtmidi(port, callbacks_so_far: Callable[[], int] | None = None) -> None:
    """Close an rtmidi port and its client without ever hanging the process.

    Closing a JACK client cancels its process thread. If that thread is inside a Python input
    callback waiting for the GIL, it dies holding the GIL's lock and the whole process hangs (or
    the callback runs on freed memory). So the port is unregistered first (nothing new arrives; the
    callback stays), the GIL is let go until the callbacks already under way have finished (a busy
    cycle can hold thousands; a callback still waiting for the GIL looks quiet for a window, so
    several quiet windows in a row are needed), and only then are the callback and the client
    dropped. If they never settle, the client is left open: a leak is better than a hang."""
    # A private class, as python-rtmidi 1.5.x has it: pyproject.toml bounds the dependency to 1.5.x.
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
