"""Which MIDI system improv uses, and opening ports on it: improv's own JACK client when a JACK
server runs and the native part was built, python-rtmidi's ports otherwise."""

from __future__ import annotations

import sys
import time
from typing import Callable

from improv.errors import PortError
from improv.midi import rtmidi_backend
from improv.midi.ports import NO_MIDI_HELP, Enqueue, InputPort, OutputPort, backend_help


def choose_backend(backend: str = "auto") -> str:
    """The backend name to use; raises PortError saying what to install or start."""
    if backend != "auto":
        if not rtmidi_backend.works(rtmidi_backend.api_constants()[backend]):
            raise PortError(f"MIDI backend {backend!r} is not available here; {backend_help(backend)}")
        return backend
    candidates = ["jack"] + {"linux": ["alsa"], "darwin": ["coremidi"], "win32": ["winmm"]}.get(sys.platform, [])
    for name in candidates:
        if rtmidi_backend.works(rtmidi_backend.api_constants()[name]):
            return name
    raise PortError(f"no MIDI system is available: {NO_MIDI_HELP.get(sys.platform, 'start a JACK server')}")


def uses_native_jack(backend: str) -> bool:
    """True when `backend` is served by improv's own JACK client (built at install)."""
    if backend != "jack":
        return False
    from improv.midi import jack

    return jack.available()


def open_input(backend: str, client_name: str, port: str | list[str] | None, enqueue: Enqueue,
               clock: Callable[[], float] = time.monotonic) -> InputPort:
    """A virtual input (`port` None), or one input hearing every port `port` names."""
    if uses_native_jack(backend):
        from improv.midi.jack import JackInputPort

        return JackInputPort(client_name, port, enqueue, clock)
    return rtmidi_backend.RtMidiInput(backend, client_name, port, enqueue, clock)


def open_output(backend: str, client_name: str, port: str | None,
                clock: Callable[[], float] = time.monotonic) -> OutputPort:
    if uses_native_jack(backend):
        from improv.midi.jack import JackOutputPort

        return JackOutputPort(client_name, port, clock)
    return rtmidi_backend.RtMidiOutput(backend, client_name, port)


class Backend:
    """A MIDI backend (`choose_backend`'s name) as the daemon's MidiSystem."""

    def __init__(self, name: str):
        self.name = name

    def open_input(self, client_name: str, port: str | list[str] | None, enqueue: Enqueue,
                   clock: Callable[[], float] = time.monotonic) -> InputPort:
        return open_input(self.name, client_name, port, enqueue, clock)

    def open_output(self, client_name: str, port: str | None,
                    clock: Callable[[], float] = time.monotonic) -> OutputPort:
        return open_output(self.name, client_name, port, clock)


def list_ports(backend: str) -> tuple[list[str], list[str]]:
    """(input port names, output port names) that improv can connect to."""
    return rtmidi_backend.list_ports(backend)


def virtual_port_names(backend: str, client_name: str = "improv") -> tuple[str, str]:
    """The (input, output) port names `improv run` opens when no port is named."""
    if uses_native_jack(backend):
        return f"{client_name}:in", f"{client_name}:out"
    return f"{client_name}-in:in", f"{client_name}-out:out"
