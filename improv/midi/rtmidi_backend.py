"""python-rtmidi's ports: the ALSA sequencer on Linux, CoreMIDI on macOS, WinMM on Windows, and
JACK as the `jack-rtmidi` backend (or where improv's own JACK client was not built). Each input and
output is its own client, so a graph or an ALSA patchbay shows "improv-in" and "improv-out".
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable

from improv.errors import PortError
from improv.midi.messages import RawInput
from improv.midi.ports import Enqueue, backend_help, find_port, quiet_stderr

CALLBACK_SETTLE_S = 0.02  # no input callback for this long after the port is gone: the last has ended
CALLBACK_QUIET_WINDOWS = 3
CALLBACK_DRAIN_LIMIT_S = 2.0


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

class _Port:
    """One rtmidi client with one port: virtual ("CLIENT-in:in") or connected to an existing port by name."""

    direction = ""  # "in" or "out"

    def __init__(self, backend: str, client_name: str, port: str | None):
        rtmidi = _rtmidi()
        kind, label = (rtmidi.MidiIn, "input") if self.direction == "in" else (rtmidi.MidiOut, "output")
        try:
            with quiet_stderr():
                self._rt = kind(rtapi=api_constants()[backend], name=f"{client_name}-{self.direction}")
        except (rtmidi.RtMidiError, SystemError) as err:
            raise PortError(f"cannot open a MIDI {label} on {backend}: {err}; {backend_help(backend)}") from err
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

class RtMidiInput(_Port):
    """A MIDI input whose callback only timestamps and enqueues (see the module docstring)."""

    direction = "in"

    def __init__(self, backend: str, client_name: str, port: str | None, enqueue: Enqueue,
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
