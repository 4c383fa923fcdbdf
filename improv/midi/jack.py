"""improv's own JACK MIDI client: one client "improv" with ports "in" and "out", whose realtime
process callback is native code (improv/midi/_jackmidi.c), driven through libjack with ctypes.

Against python-rtmidi's JACK backend it buys: one client woken per period instead of two; no Python
and no GIL on JACK's thread (the input is read by a Python thread that sleeps on a pipe, so closing
can never hang on the GIL); input stamped when the callback first sees it and with its own frame
time; MIDI clock pulses kept as bare frame times in a ring of their own, read in batches
(`clock_pulses`); and output handed over 2 ms early with its due time, which the callback sends in
the first cycle at or after it, so the engine thread's wake-up jitter never moves a note. It is used
for `backend: jack` when the native part was built at install; otherwise improv falls back to
python-rtmidi's JACK backend.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import importlib.machinery
import logging
import os
import select
import threading
import time
from pathlib import Path
from typing import Callable, NamedTuple

from improv.errors import PortError
from improv.midi.messages import RawInput
from improv.midi.ports import Enqueue, find_port, port_names, quiet_stderr

log = logging.getLogger("improv")

MIDI_TYPE = b"8 bit raw midi"
PORT_IS_INPUT, PORT_IS_OUTPUT = 0x1, 0x2
NO_START_SERVER = 0x01
# The IJM_ABI_VERSION of the _jackmidi.c this file drives: a library built from another improv is
# refused, since its functions, its ijm_api or its counters may not be the ones called here.
ABI_VERSION = 2
REBUILD_HINT = "rebuild: pip install -e . (or reinstall improv)"
DRAIN_LIMIT_S = 0.5  # at close: how long unsent messages may take to leave
READER_JOIN_S = 2.0
# A message goes out in the first cycle at or after its due time, so it only has to be in the ring
# by then: handed over this long before due, the engine thread may wake this late and no note moves.
# Well under the model's 10 ms time step, so the model's context is the same either way.
HANDOVER_S = 0.002
OFFSET_REFRESH_S = 1.0  # JACK's clock is CLOCK_MONOTONIC_RAW, which NTP does not slew: re-read the offset
COUNTERS = {"cycles": 0, "dropped_in": 1, "dropped_out": 2, "filtered": 3, "server_gone": 4, "pulses_in": 5,
            "dropped_pulses": 6}  # the C enum's order


class Limits(NamedTuple):
    """The native library's sizes, read from it (ijm_limits) so that they are never written twice."""

    max_bytes: int  # the longest message it carries (IJM_MAX_BYTES)
    ring_size: int  # messages each of its rings holds (IJM_RING)
    late_cycles_kept: int  # late cycle starts it remembers (IJM_LATE)
    pulses_kept: int  # clock pulse times its pulse ring holds (IJM_PULSES)


class _Api(ctypes.Structure):
    """The libjack functions the process callback calls (ijm_api in _jackmidi.c, same order)."""

    _fields_ = [(name, ctypes.c_void_p) for name in (
        "jack_port_get_buffer", "jack_midi_get_event_count", "jack_midi_event_get", "jack_midi_clear_buffer",
        "jack_midi_event_write", "jack_midi_max_event_size", "jack_get_time")]


@functools.cache
def _load() -> tuple[ctypes.CDLL, ctypes.CDLL, Limits] | None:
    """(libjack, the native callback library, its limits), or None when either library is missing
    or the native one was built from another improv (warned about once, here)."""
    jack, native = libjack(), _load_native()
    return None if jack is None or native is None else (jack, *native)


def available() -> bool:
    return _load() is not None


@functools.cache
def libjack() -> ctypes.CDLL | None:
    """libjack with the signatures improv calls, or None where it is not installed."""
    name = ctypes.util.find_library("jack")
    try:
        jack = ctypes.CDLL(name or "libjack.so.0")
    except OSError:
        return None
    P, U32, U64, S, I, UL = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_char_p, ctypes.c_int, ctypes.c_ulong
    signatures = {
        "jack_client_open": (P, [S, I, ctypes.POINTER(I)]),
        "jack_client_close": (I, [P]),
        "jack_get_client_name": (S, [P]),
        "jack_activate": (I, [P]),
        "jack_deactivate": (I, [P]),
        "jack_set_process_callback": (I, [P, P, P]),
        "jack_on_shutdown": (None, [P, P, P]),
        "jack_port_register": (P, [P, S, S, UL, UL]),
        "jack_port_name": (S, [P]),
        "jack_connect": (I, [P, S, S]),
        "jack_disconnect": (I, [P, S, S]),
        "jack_port_connected_to": (I, [P, S]),
        "jack_port_get_connections": (P, [P]),
        "jack_get_ports": (P, [P, S, S, UL]),
        "jack_free": (None, [P]),
        "jack_get_time": (U64, []),
        "jack_get_buffer_size": (U32, [P]),
        "jack_get_sample_rate": (U32, [P]),
    }
    for function, (restype, argtypes) in signatures.items():
        getattr(jack, function).restype = restype
        getattr(jack, function).argtypes = argtypes
    return jack


def _load_native() -> tuple[ctypes.CDLL, Limits] | None:
    here = Path(__file__).parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = here / f"_jackmidi{suffix}"
        if path.exists():
            return check_native(ctypes.CDLL(str(path)), path.name)
    return None


def check_native(native, name: str) -> tuple[ctypes.CDLL, Limits] | None:
    """`native` with the signatures improv calls, and its limits; None, with a warning, when it was
    built for another ABI_VERSION (or before the library said its version)."""
    abi_version = getattr(native, "ijm_abi_version", None)
    if abi_version is not None:
        abi_version.restype, abi_version.argtypes = ctypes.c_uint32, []
        abi_version = abi_version()
    if abi_version != ABI_VERSION:
        log.warning("improv's native JACK client %s was built from another improv (ABI version %s, this improv "
                    "needs %d); %s", name, "unknown" if abi_version is None else abi_version, ABI_VERSION,
                    REBUILD_HINT)
        return None
    P, U32, U64 = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint64
    for function, restype, argtypes in (
            ("ijm_limits", None, [ctypes.POINTER(U32)] * len(Limits._fields)),
            ("ijm_new", P, [P, P, ctypes.c_int, U32]),
            ("ijm_free", None, [P]),
            ("ijm_set_ports", None, [P, P, P]),
            ("ijm_read", U32, [P, ctypes.POINTER(U64), ctypes.POINTER(U64), ctypes.c_char_p]),
            ("ijm_read_pulses", U32, [P, ctypes.POINTER(U64), U32]),
            ("ijm_send", ctypes.c_int, [P, U64, ctypes.c_char_p, U32]),
            ("ijm_unsent", U64, [P]),
            ("ijm_late_cycles", U32, [P, ctypes.POINTER(U64), U32]),
            ("ijm_counter", U64, [P, ctypes.c_int]),
            ("ijm_last_out_us", U64, [P]),
            ("ijm_shutdown", None, [P])):
        getattr(native, function).restype = restype
        getattr(native, function).argtypes = argtypes
    sizes = [U32() for _ in Limits._fields]
    native.ijm_limits(*(ctypes.byref(size) for size in sizes))
    return native, Limits(*(size.value for size in sizes))


def limits() -> Limits | None:
    """The sizes of the native library improv loaded, or None when it is not loaded."""
    loaded = _load()
    return None if loaded is None else loaded[2]


class JackMidiClient:
    """One JACK client with a MIDI input and a MIDI output. The input and output ports of
    JackInputPort and JackOutputPort share it (see `acquire`); it closes when the last of them lets
    go. The test and benchmark probe (improv.tools.probe.ProbeClient) opens clients with one port each."""

    _open: dict[str, "JackMidiClient"] = {}
    _lock = threading.Lock()

    @classmethod
    def acquire(cls, client_name: str, clock: Callable[[], float] = time.monotonic) -> "JackMidiClient":
        with cls._lock:
            client = cls._open.get(client_name)
            if client is not None and client.server_gone():
                # Opening a client beside a dead one lets libjack free the dead one under its users.
                raise PortError(f"JACK closed client {client.name!r}: close its ports before opening them again")
            if client is None:
                client = cls._open[client_name] = cls(client_name, clock)
            client.users += 1
            return client

    def release(self) -> None:
        with JackMidiClient._lock:
            self.users -= 1
            if self.users > 0:
                return
            if JackMidiClient._open.get(self.requested_name) is self:
                del JackMidiClient._open[self.requested_name]
        self.close()

    def __init__(self, client_name: str, clock: Callable[[], float] = time.monotonic,
                 in_name: str | None = "in", out_name: str | None = "out"):
        """A client with an input port `in_name` and an output port `out_name` (None: no such port)."""
        loaded = _load()
        if loaded is None:
            raise PortError("improv's native JACK client is not built, or was built from another improv "
                            f"({REBUILD_HINT}, with a C compiler)")
        self.jack, self.native, self.limits = loaded
        self.requested_name, self.users, self.clock = client_name, 0, clock
        self.state = None
        # Each step pushes its undoing; a failure unwinds in reverse, and success pops them all. The
        # order is _free's: the client closes (its callbacks stop) before the state they are handed
        # is freed, and the pipe the callbacks write to closes last.
        with contextlib.ExitStack() as undo:
            self._wake_read, self._wake_write = os.pipe()
            undo.callback(os.close, self._wake_read)
            undo.callback(os.close, self._wake_write)
            os.set_blocking(self._wake_write, False)  # the realtime callback must never block on it
            os.set_blocking(self._wake_read, False)
            def free_state() -> None:
                if self.state:
                    self.native.ijm_free(self.state)
            undo.callback(free_state)
            status = ctypes.c_int(0)
            with quiet_stderr():
                self.client = self.jack.jack_client_open(client_name.encode(), NO_START_SERVER, ctypes.byref(status))
            if not self.client:
                raise PortError(f"cannot open a JACK client (status 0x{status.value:x}); start a JACK server first "
                                "(jackd -d dummy -r 48000 -p 64)")
            undo.callback(self.jack.jack_client_close, self.client)  # which unregisters its ports too
            self.name = self.jack.jack_get_client_name(self.client).decode()
            self.in_port, self.out_port = (
                self.jack.jack_port_register(self.client, name.encode(), MIDI_TYPE, flags, 0) if name else None
                for name, flags in ((in_name, PORT_IS_INPUT), (out_name, PORT_IS_OUTPUT)))
            if (in_name and not self.in_port) or (out_name and not self.out_port):
                raise PortError(f"JACK refused to register MIDI ports for client {self.name!r}")
            # Read now: the port's name lives in the server's shared memory, which may go with the server.
            self._port_names = {direction: self.jack.jack_port_name(port).decode() if port else None
                                for direction, port in (("in", self.in_port), ("out", self.out_port))}
            self._api = _Api(*(ctypes.cast(getattr(self.jack, name), ctypes.c_void_p) for name, _ in _Api._fields_))
            rate = self.jack.jack_get_sample_rate(self.client)
            self.state = self.native.ijm_new(ctypes.byref(self._api), self.client, self._wake_write, rate)
            if not self.state:
                raise PortError(f"cannot set up JACK client {self.name!r} (sample rate {rate})")
            process = ctypes.cast(self.native.ijm_process, ctypes.c_void_p)
            self.jack.jack_set_process_callback(self.client, process, self.state)
            self.jack.jack_on_shutdown(self.client, ctypes.cast(self.native.ijm_shutdown, ctypes.c_void_p),
                                       self.state)
            self.native.ijm_set_ports(self.state, self.in_port, self.out_port)
            if self.jack.jack_activate(self.client) != 0:
                raise PortError(f"JACK would not activate client {self.name!r}")
            undo.callback(self.jack.jack_deactivate, self.client)
            self.period_s = self.jack.jack_get_buffer_size(self.client) / rate
            self.handover_s = HANDOVER_S
            self._offset_s, self._offset_read_s = self._clock_offset_s(), self.clock()
            undo.pop_all()
        self._send_lock = threading.Lock()
        self._read_lock = threading.Lock()  # the input ring has one reader at a time
        self._pulse_lock = threading.Lock()  # and so has the pulse ring
        self._pulse_times_us = (ctypes.c_uint64 * self.limits.pulses_kept)()  # one ring's worth, read in one call
        self._dropped_in = self._dropped_pulses = 0
        self._reader: threading.Thread | None = None
        self._enqueue: Callable | None = None
        self._closed = False

    def offset_s(self) -> float:
        """`clock` minus JACK's clock in seconds, read again once a second."""
        if self.clock() - self._offset_read_s > OFFSET_REFRESH_S:
            self._offset_s, self._offset_read_s = self._clock_offset_s(), self.clock()
        return self._offset_s

    def _clock_offset_s(self, samples: int = 20) -> float:
        """`clock` minus JACK's microsecond clock, from the tightest of a few bracketed readings."""
        best = None
        for _ in range(samples):
            before = self.clock()
            jack_s = self.jack.jack_get_time() / 1e6
            after = self.clock()
            if best is None or after - before < best[0]:
                best = (after - before, (before + after) / 2 - jack_s)
        return best[1]

    def server_gone(self) -> bool:
        """True once JACK has closed this client (its server stopped, or dropped it): it never works again."""
        return self.counter("server_gone") != 0

    def port_name(self, direction: str) -> str:
        return self._port_names[direction]

    def peers(self, direction: str) -> list[str]:
        """The other MIDI ports our `direction` port could connect to (outputs for our input)."""
        flags = PORT_IS_OUTPUT if direction == "in" else PORT_IS_INPUT
        own = f"{self.name}:"
        found = self._names(self.jack.jack_get_ports(self.client, None, MIDI_TYPE, flags))
        return [name for name in found if not name.startswith(own)]

    def connections(self, direction: str) -> list[str]:
        """The ports our `direction` port is connected to now."""
        return self._names(self.jack.jack_port_get_connections(self.in_port if direction == "in" else self.out_port))

    def _names(self, names) -> list[str]:
        """A NULL-terminated array of port names from libjack, freed here."""
        if not names:
            return []
        try:
            array = ctypes.cast(names, ctypes.POINTER(ctypes.c_char_p))
            found, i = [], 0
            while array[i] is not None:
                found.append(array[i].decode())
                i += 1
        finally:
            self.jack.jack_free(names)
        return found

    def _endpoints(self, direction: str, peer: str) -> tuple[str, str]:
        """(source, destination) of a connection between our `direction` port and `peer`."""
        return (peer, self.port_name("in")) if direction == "in" else (self.port_name("out"), peer)

    def connect(self, direction: str, peer: str) -> None:
        source, destination = self._endpoints(direction, peer)
        result = self.jack.jack_connect(self.client, source.encode(), destination.encode())
        if result not in (0, 17):  # 17 = EEXIST: already connected
            raise PortError(f"JACK would not connect {source} to {destination} (error {result})")

    def disconnect(self, direction: str, peer: str) -> None:
        source, destination = self._endpoints(direction, peer)
        self.jack.jack_disconnect(self.client, source.encode(), destination.encode())

    def connected_to(self, direction: str, peer: str) -> bool:
        port = self.in_port if direction == "in" else self.out_port
        return bool(self.jack.jack_port_connected_to(port, peer.encode()))

    # -- input ------------------------------------------------------------------------------------
    def listen(self, enqueue: Callable) -> None:
        """Deliver each input message as enqueue(RawInput) from a reader thread; stale ones (and
        stale clock pulses) are dropped."""
        self._drain(lambda *_: None)
        self.clock_pulses()
        self._enqueue = enqueue
        if self._reader is None:
            self._reader = threading.Thread(target=self._read_loop, args=(RawInput,), name="improv-jack-in",
                                            daemon=True)
            self._reader.start()

    def stop_listening(self) -> None:
        self._enqueue = None

    def _read_loop(self, raw_input) -> None:
        try:
            self._read_until_closed(raw_input)
        except Exception:
            log.exception("improv's JACK input reader stopped; restart improv to hear the player again")

    def _read_until_closed(self, raw_input) -> None:
        emptied, gone_logged = True, False
        while not self._closed:
            # The callback writes a byte after queueing input; a ring left unemptied is read on at once.
            select.select([self._wake_read], [], [], None if emptied else 0)
            try:
                os.read(self._wake_read, 4096)
            except BlockingIOError:
                pass
            except OSError:
                return
            enqueue = self._enqueue
            emptied = self._drain((lambda t, at, data: enqueue(raw_input(t, data, at))) if enqueue is not None
                                  else (lambda *_: None))
            if self.server_gone() and not gone_logged:
                log.error("JACK closed client %r (its server %s stopped, or dropped the client)", self.name,
                          os.environ.get("JACK_DEFAULT_SERVER", "default"))
                gone_logged = True
            dropped = self.counter("dropped_in")
            if dropped > self._dropped_in:
                log.warning("JACK input: %d messages dropped (improv fell behind a flood)", dropped - self._dropped_in)
                self._dropped_in = dropped

    def _drain(self, deliver) -> bool:
        """Deliver at most one ring's worth (under a flood the ring never empties and the caller
        must get on); True when the ring was emptied."""
        time_us, at_us = ctypes.c_uint64(0), ctypes.c_uint64(0)
        data = ctypes.create_string_buffer(self.limits.max_bytes)
        with self._read_lock:
            for _ in range(self.limits.ring_size):
                if self._closed:
                    return True
                size = self.native.ijm_read(self.state, ctypes.byref(time_us), ctypes.byref(at_us), data)
                if size == 0:
                    return True
                offset_s = self.offset_s()
                deliver(time_us.value / 1e6 + offset_s, at_us.value / 1e6 + offset_s, list(data.raw[:size]))
        return False

    def clock_pulses(self) -> list[float]:
        """The frame times of the MIDI clock pulses received since the last call, oldest first, on
        `clock`. The callback keeps them in a ring of their own (limits.pulses_kept): call at least
        that often, or the newest are dropped (counted, and warned about here)."""
        times_us, pulses = self._pulse_times_us, []
        with self._pulse_lock:
            while not self._closed:
                found = self.native.ijm_read_pulses(self.state, times_us, len(times_us))
                offset_s = self.offset_s()
                pulses.extend(time_us / 1e6 + offset_s for time_us in times_us[:found])
                if found < len(times_us):
                    break
            dropped = 0 if self._closed else self.counter("dropped_pulses")
        if dropped > self._dropped_pulses:
            log.warning("JACK input: %d clock pulses dropped (not read for a while)", dropped - self._dropped_pulses)
            self._dropped_pulses = dropped
        return pulses

    # -- output -----------------------------------------------------------------------------------
    def send(self, data: list[int], due_s: float | None = None) -> None:
        """Queue a message for the next cycle, or, with `due_s` (on `clock`), for the first cycle at or
        after its due time, at its offset in the period before."""
        due_us = 0 if due_s is None else max(1, round((due_s - self.offset_s()) * 1e6))
        if self.out_port is None:
            raise PortError(f"JACK client {self.name!r} has no output port")
        if self.server_gone():
            raise PortError(f"cannot send to {self.port_name('out')}: JACK closed the client (its server stopped, "
                            "or dropped it)")
        with self._send_lock:
            if self._closed or self.native.ijm_send(self.state, due_us, bytes(data), len(data)) != 0:
                raise PortError(f"cannot send {len(data)} bytes to {self.port_name('out')}: "
                                + ("closed" if self._closed else "message too long or output queue full"))

    def unsent(self) -> int:
        """Messages sent but not yet written to the port."""
        return int(self.native.ijm_unsent(self.state))

    def last_out_s(self) -> float | None:
        """The start of the last cycle that wrote output, on `clock` (None before any): when a synth
        in the graph plays what it carried, as input is stamped."""
        time_us = self.native.ijm_last_out_us(self.state)
        return time_us / 1e6 + self.offset_s() if time_us else None

    def late_cycles_s(self) -> list[float]:
        """Starts of the last cycles (up to limits.late_cycles_kept) that began more than 1.5 periods
        after the one before, newest first, on `clock`: where JACK did not keep time."""
        kept = self.limits.late_cycles_kept
        starts = (ctypes.c_uint64 * kept)()
        found = self.native.ijm_late_cycles(self.state, starts, kept)
        return [starts[i] / 1e6 + self.offset_s() for i in range(found)]

    def counter(self, name: str) -> int:
        return int(self.native.ijm_counter(self.state, COUNTERS[name]))

    # -- closing ----------------------------------------------------------------------------------
    def close(self) -> None:
        """Let the messages already sent leave, then deactivate (which waits for the callback to
        return) and close. Nothing runs Python on JACK's thread, so nothing can hang on the GIL."""
        if self._closed:
            return
        deadline = time.monotonic() + DRAIN_LIMIT_S
        while self.unsent() and not self.server_gone() and time.monotonic() < deadline:
            time.sleep(self.period_s)
        with self._send_lock, self._read_lock, self._pulse_lock:
            self._closed = True
        with contextlib.suppress(BlockingIOError):  # a full pipe wakes the reader just as well
            os.write(self._wake_write, b"\0")  # the reader wakes, sees _closed, and ends
        if self._reader is not None:
            self._reader.join(timeout=READER_JOIN_S)
            if self._reader.is_alive():
                log.error("improv's JACK input reader did not end; leaving its client open rather than free it")
                return
        if self.server_gone():
            # Closing a client JACK has already let go can block (a known libjack behaviour), and
            # libjack frees its leftovers at the next client open: its handle is left alone.
            return
        self._free()

    def _free(self) -> None:
        self.jack.jack_deactivate(self.client)
        self.jack.jack_client_close(self.client)
        self.native.ijm_free(self.state)
        os.close(self._wake_read)
        os.close(self._wake_write)


# -- the ports improv run opens on the client ------------------------------------------------------
class _JackPort:
    """Improv's own JACK client's input or output (JackMidiClient above): virtual, or connected to
    existing ports by name (JACK merges what several send into one input). Both directions share
    the one client."""

    direction = ""

    def __init__(self, client_name: str, port: str | list[str] | None, clock: Callable[[], float] = time.monotonic):
        self.client = JackMidiClient.acquire(client_name, clock)
        self.wanted, self.peers = port, []
        try:
            self.peers = self._find(port_names(port))
            for peer in self.peers:
                self.client.connect(self.direction, peer)
        except BaseException:
            self._disconnect()
            self.client.release()
            raise
        self.name = ", ".join(self.peers) or self.client.port_name(self.direction)

    def _find(self, wanted: list[str]) -> list[str]:
        """The full names of the ports `wanted` names, each once; every one is found before any is
        connected, so a name that is not there leaves nothing connected."""
        if not wanted:
            return []
        available = self.client.peers(self.direction)
        label = "input" if self.direction == "in" else "output"
        return list(dict.fromkeys(available[find_port(name, available, label)] for name in wanted))

    def still_connected(self) -> bool:
        """False once JACK has closed the client, or any port connected by name has gone."""
        if self.server_gone():
            return False
        return all(self.client.connected_to(self.direction, peer) for peer in self.peers)

    def server_gone(self) -> bool:
        """JACK has closed the client both directions share (its server stopped, or dropped it)."""
        return self.client.server_gone()

    def _disconnect(self) -> None:
        if not self.client.server_gone():
            for peer in self.peers:
                self.client.disconnect(self.direction, peer)

    def close(self) -> None:
        self._disconnect()
        self.client.release()

class JackInputPort(_JackPort):
    direction = "in"

    def __init__(self, client_name: str, port: str | list[str] | None, enqueue: Enqueue,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(client_name, port, clock)
        self.client.listen(enqueue)

    def clock_pulses(self) -> list[float]:
        """The frame times of the clock pulses received since the last call, oldest first."""
        return self.client.clock_pulses()

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
    if server is not None:
        with default_jack_server(server):
            return jack_period_ms()

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
