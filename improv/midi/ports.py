"""The port interface both MIDI backends serve, and what they share: finding a port by name,
parsing raw bytes, keeping the C libraries' own chatter off the terminal.

The input callback contract, for every backend: it runs on the MIDI system's own thread (JACK's
process thread under JACK, where improv's own client runs no Python at all). It only timestamps the
raw bytes and hands them to `enqueue`: no parsing, no logging, no locks, never the model. MIDI clock
pulses (0xF8) are not enqueued: they are times only, kept by the port and read in a batch with
`clock_pulses()`, so a clock at any rate costs the engine one call per look.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable, Protocol

import mido

from improv.errors import PortError
from improv.midi.messages import RawInput

os.environ.setdefault("JACK_NO_START_SERVER", "1")  # probing for JACK must never start a server

PORT_SETTLE_S = 0.2  # a new connection carries messages only from the next cycles on: wait before the first
NO_MIDI_HELP = {
    "linux": "start the ALSA sequencer (sudo modprobe snd-seq) or a JACK server "
             "(jackd -d dummy -r 48000 -p 64, or your sound card's driver instead of dummy)",
    "darwin": "CoreMIDI should always be there: check that python-rtmidi installed correctly",
    "win32": "WinMM should always be there: check that python-rtmidi installed correctly",
}

Enqueue = Callable[[RawInput], None]


class InputPort(Protocol):
    """An open MIDI input: each message it receives goes to the `enqueue` it was opened with, as a
    RawInput with its time and, where the port knows it, the message's own time (`at_s`); clock
    pulses stay with the port until `clock_pulses` reads them."""

    name: str

    def clock_pulses(self) -> list[float]:
        """The times (on the port's clock, as RawInput.at_s) of the MIDI clock pulses (0xF8)
        received since the last call, oldest first."""

    def still_connected(self) -> bool:
        """For ports connected by name: is every one of them still there?"""

    def server_gone(self) -> bool:
        """The MIDI system closed the client under the port (a JACK server that stopped)."""

    def close(self) -> None: ...


class OutputPort(Protocol):
    """An open MIDI output."""

    name: str
    handover_s: float  # a message may be sent this long before it is due (0: at its due time)

    def send(self, data: list[int], due_s: float | None = None) -> None:
        """Send now, or at `due_s` where the port places messages at their time; PortError if it cannot."""

    def still_connected(self) -> bool: ...

    def server_gone(self) -> bool: ...

    def close(self) -> None: ...


class MidiSystem(Protocol):
    """Where ports come from: a backend (improv.midi.backend.Backend) or, in tests, memory. The daemon
    opens its ports through it, and opens them again after one went away."""

    name: str

    def open_input(self, client_name: str, port: str | list[str] | None, enqueue: Enqueue,
                   clock: Callable[[], float]) -> InputPort:
        """A virtual input named after the client (`port` None), or one input hearing every port
        `port` names (one name or a list), connected by name."""

    def open_output(self, client_name: str, port: str | None, clock: Callable[[], float]) -> OutputPort: ...


def backend_help(backend: str) -> str:
    """What to start or install when `backend` is not available."""
    if backend.startswith("jack"):
        return "start a JACK server first (jackd -d dummy -r 48000 -p 64)"
    if backend == "alsa":
        return "load the ALSA sequencer (sudo modprobe snd-seq)"
    return NO_MIDI_HELP.get(sys.platform, "check python-rtmidi")


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


def port_names(port: str | list[str] | None) -> list[str]:
    """The names in an `open_input` port argument (one name, a list, or None for a virtual port),
    each once, in order."""
    if port is None:
        return []
    return list(dict.fromkeys([port] if isinstance(port, str) else port))


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


def parse(data: list[int]) -> mido.Message:
    """Raw bytes to a message; ValueError says what was wrong with a malformed one."""
    try:
        return mido.Message.from_bytes(data)
    except (ValueError, TypeError, IndexError, KeyError) as err:  # mido's errors for short or odd bytes vary
        raise ValueError(f"malformed MIDI message {bytes(data[:8]).hex(' ')}: {err!r}") from err
