"""improv's own JACK client (improv/midi/jack.py and its native callback), through a real JACK server."""

import importlib.machinery
import logging
import os
import re
import signal
import time
from pathlib import Path

import pytest

from conftest import wait_for
from improv.errors import PortError
from improv.midi import jack as jackmidi
from improv.midi.backend import open_input, open_output, virtual_port_names
from improv.midi.jack import JackInputPort, JackOutputPort
from improv.tools.probe import ProbeClient

C_SOURCE = Path(jackmidi.__file__).with_name("_jackmidi.c")
BUILT = [path for path in (C_SOURCE.with_name(f"_jackmidi{suffix}")
                           for suffix in importlib.machinery.EXTENSION_SUFFIXES) if path.exists()]
# Skipped only where the library was not built (or libjack is missing): a build jack.py refuses fails.
pytestmark = [pytest.mark.jack,
              pytest.mark.skipif(not BUILT or jackmidi.libjack() is None,
                                 reason="the native JACK client was not built")]
SLACK_S = 0.001  # the clock mapping is read to microseconds; this is generous


@pytest.fixture
def probe(jack):
    probe = ProbeClient("jm-probe")
    yield probe
    probe.close()


def test_the_loaded_library_is_built_from_this_source_at_the_version_and_sizes_jack_py_uses():
    # A build older than its source (the C file changed, pip install -e . not run again), or a
    # jack.py not updated with the C file, fails here instead of misreading memory on JACK's thread.
    source = C_SOURCE.read_text()
    defined = {name: int(value) for name, value in re.findall(r"^#define (IJM_\w+) (\d+)", source, re.M)}
    loaded = jackmidi._load()
    assert loaded is not None, f"jack.py refused {BUILT[0].name}: {jackmidi.REBUILD_HINT}"
    _, native, limits = loaded
    assert native.ijm_abi_version() == defined["IJM_ABI_VERSION"] == jackmidi.ABI_VERSION
    assert limits == jackmidi.limits() == (defined["IJM_MAX_BYTES"], defined["IJM_RING"], defined["IJM_LATE"],
                                           defined["IJM_PULSES"])
    counters = re.split(r",\s*", re.search(r"enum \{\s*(IJM_CYCLES,[^}]*?),?\s*\};", source).group(1))
    assert counters[-1] == "IJM_COUNTERS"
    assert jackmidi.COUNTERS == {name[len("IJM_"):].lower(): i for i, name in enumerate(counters[:-1])}


class _OtherBuild:
    """A native library as built from another improv: another ABI version, or none at all (built
    before the library said its version)."""

    def __init__(self, abi_version: int | None):
        if abi_version is not None:
            self.ijm_abi_version = lambda: abi_version


@pytest.mark.parametrize("abi_version", [jackmidi.ABI_VERSION + 1, jackmidi.ABI_VERSION - 1, None])
def test_a_library_built_for_another_version_is_refused_with_how_to_rebuild_it(abi_version, caplog):
    with caplog.at_level(logging.WARNING, logger="improv"):
        assert jackmidi.check_native(_OtherBuild(abi_version), "_jackmidi.so") is None
    assert "rebuild: pip install -e ." in caplog.text
    assert f"this improv needs {jackmidi.ABI_VERSION}" in caplog.text


def test_a_client_that_fails_to_set_up_leaves_no_client_ports_or_descriptors(probe):
    # Two ports of one name: JACK registers the first and refuses the second, after the pipe, the
    # client and a port exist. All of it must be undone, and the name free for the next client.
    fds_before = sorted(os.listdir("/proc/self/fd"))
    with pytest.raises(PortError, match="refused to register"):
        jackmidi.JackMidiClient("jm-unwind", in_name="twice", out_name="twice")
    assert sorted(os.listdir("/proc/self/fd")) == fds_before
    assert not [name for name in probe.keys.peers("out") if name.startswith("jm-unwind")]
    client = jackmidi.JackMidiClient("jm-unwind")
    try:
        assert client.name == "jm-unwind"
    finally:
        client.close()


def test_input_and_output_are_one_client_named_improv(jack):
    received = []
    inp = open_input("jack", "jm-one", None, received.append)
    out = open_output("jack", "jm-one", None)
    try:
        assert isinstance(inp, JackInputPort) and isinstance(out, JackOutputPort)
        assert (inp.name, out.name) == virtual_port_names("jack", "jm-one") == ("jm-one:in", "jm-one:out")
        assert inp.client is out.client
    finally:
        inp.close()
        out.close()
    assert "jm-one" not in jackmidi.JackMidiClient._open  # the last user closed the client


def test_input_is_stamped_on_the_monotonic_clock_between_send_and_arrival(probe):
    received, arrived = [], []
    port = open_input("jack", "jm-in", None, lambda raw: (received.append(raw), arrived.append(time.monotonic())))
    try:
        probe.connect("jm-in:in", "jm-in:out")
        for i in range(20):
            sent_s = probe.send(0x90, 60 + i, 90 - i)
            assert wait_for(lambda: len(received) > i), f"message {i} never arrived"
            assert sent_s - SLACK_S <= received[i].time_s <= arrived[i] + SLACK_S
            assert received[i].data == [0x90, 60 + i, 90 - i]
    finally:
        port.close()


def test_a_sent_message_is_stamped_with_the_cycle_that_carried_it_like_an_arrival(jack):
    # The bench measures reactions from here: the keys client writes in cycle N, and a client after
    # it in the graph reads in the same cycle N, so the two stamps agree to well under a period
    # (stamped at the send call instead, they would differ by a random part of one).
    probe = ProbeClient("jm-self")
    try:
        probe.connect("jm-self-synth:synth", "jm-self-keys:keys")
        assert probe.last_sent_s() is None
        period_s = probe.keys.period_s
        for i in range(10):
            sent_s = probe.send(0x90, 60 + i, 80)
            assert wait_for(lambda: len(probe.pending()) == 1), f"message {i} never arrived"
            (arrived_s, data), = probe.drain()
            entered_s = probe.last_sent_s()
            assert data == [0x90, 60 + i, 80]
            assert sent_s - SLACK_S <= entered_s <= sent_s + period_s + 0.02  # its next cycle, on a loaded VM
            assert abs(arrived_s - entered_s) < period_s / 2, f"{1000 * (arrived_s - entered_s):.2f} ms apart"
            time.sleep(period_s * (1 + i % 3) / 3)  # the next send falls elsewhere in the cycle
    finally:
        probe.close()


def test_a_cycle_jack_starts_late_is_seen_at_its_time(jack, probe):
    # The bench separates what the machine disturbed from what improv did by these: a server held
    # still (as a hypervisor holds a VM) makes the first cycle after it late, and says when.
    time.sleep(0.1)
    jack.process.send_signal(signal.SIGSTOP)
    held_s = time.monotonic()
    time.sleep(0.1)
    continuing_s = time.monotonic()
    jack.process.send_signal(signal.SIGCONT)
    assert wait_for(lambda: probe.late_between(continuing_s, continuing_s + 1.0)), probe.synth.late_cycles_s()
    # No cycle starts while the server is held, so none is stamped then: the late one has its own time.
    assert not probe.late_between(held_s + 0.02, continuing_s - 0.02 - probe.synth.period_s / 2)


def test_sysex_time_code_and_sensing_are_dropped_before_python_and_clock_is_kept_apart(probe):
    received = []
    port = open_input("jack", "jm-filter", None, received.append)
    try:
        probe.connect("jm-filter:in", "jm-filter:out")
        for data in ([0xF0, 0x7E, 0x7F, 0x06, 0x01, 0xF7], [0xF1, 0x20], [0xF8], [0xFE], [0x80, 60, 0]):
            probe.send(*data)
        assert wait_for(lambda: received)
        time.sleep(0.05)
        assert [raw.data for raw in received] == [[0x80, 60, 0]]
        assert port.client.counter("filtered") == 3
        assert len(port.clock_pulses()) == 1 and port.clock_pulses() == []  # read once, in a batch of its own
    finally:
        port.close()


def test_a_timed_message_arrives_at_its_due_time_never_before_and_in_order(probe):
    out = open_output("jack", "jm-out", None)
    try:
        probe.connect("jm-out:in", "jm-out:out")
        probe.drain()
        start = time.monotonic() + 0.05
        dues = [start + 0.007 * i for i in range(20)]
        for i, due in enumerate(dues):
            out.send([0x90, 40 + i, 80], due)
        assert wait_for(lambda: len(probe.pending()) == 20, 2.0)
        arrivals = probe.drain()
        assert [m[1] for _, m in arrivals] == [40 + i for i in range(20)]
        late_limit_s = 2 * out.client.period_s + 0.02  # the cycle out, the listener's cycle, and a loaded machine
        for (arrived_s, _), due in zip(arrivals, dues):
            assert arrived_s >= due - SLACK_S, f"arrived {1000 * (due - arrived_s):.2f} ms before it was due"
            assert arrived_s <= due + late_limit_s, f"arrived {1000 * (arrived_s - due):.2f} ms after it was due"
    finally:
        out.close()


def test_a_message_sent_at_once_never_overtakes_one_sent_before_it(probe):
    # A note-on handed over early, then its note-off at once (the player cut in): the note-off
    # must not leave first, or the note would sound for ever.
    out = open_output("jack", "jm-order", None)
    try:
        probe.connect("jm-order:in", "jm-order:out")
        probe.drain()
        out.send([0x90, 64, 80], time.monotonic() + 0.03)
        out.send([0x80, 64, 0])
        assert wait_for(lambda: len(probe.pending()) == 2)
        assert [m[0] for _, m in probe.drain()] == [0x90, 0x80]
    finally:
        out.close()


def test_connected_by_name_and_the_loss_of_that_port_is_seen(jack):
    keys = ProbeClient("jm-stage")
    received = []
    port = open_input("jack", "jm-byname", "jm-stage-keys", received.append)
    try:
        assert port.name == "jm-stage-keys:keys" and port.still_connected()
        time.sleep(0.1)
        keys.send(0x90, 61, 70)
        assert wait_for(lambda: received)
    finally:
        keys.close()  # the keyboard is unplugged
    try:
        assert wait_for(lambda: not port.still_connected())
    finally:
        port.close()


def test_an_input_reopened_while_the_output_holds_the_client_hears_only_what_comes_after(probe):
    # A lost input port comes back while the output stays open: the client is kept, its stale
    # input is dropped, and new messages arrive whole (one reader at a time on the ring).
    out = open_output("jack", "jm-reopen", None)
    first, second = [], []
    try:
        inp = open_input("jack", "jm-reopen", None, first.append)
        probe.connect("jm-reopen:in", "jm-reopen:out")
        probe.send(0x90, 50, 60)
        assert wait_for(lambda: first)
        inp.close()
        probe.send(0x90, 51, 61)  # heard by nobody: the input is closed
        time.sleep(0.1)
        inp = open_input("jack", "jm-reopen", None, second.append)
        assert inp.client is out.client
        for i in range(50):
            probe.send(0x90, 52 + i % 40, 62)
        assert wait_for(lambda: len(second) == 50)
        assert [raw.data for raw in second] == [[0x90, 52 + i % 40, 62] for i in range(50)]
        inp.close()
    finally:
        out.close()


RAW_SENDER = """
# A bare JACK client whose process callback (Python, through ctypes) writes one event a cycle.
import ctypes, os, sys, time
from improv.midi.jack import MIDI_TYPE, NO_START_SERVER, PORT_IS_OUTPUT, libjack
jack = libjack()
P = ctypes.c_void_p
jack.jack_port_get_buffer.restype, jack.jack_port_get_buffer.argtypes = P, [P, ctypes.c_uint32]
jack.jack_midi_clear_buffer.argtypes = [P]
jack.jack_midi_event_write.argtypes = [P, ctypes.c_uint32, ctypes.c_char_p, ctypes.c_size_t]
events = [bytes([0xF0] + [0x11] * 40 + [0xF7]),  # sysex: dropped as such
          bytes([0x90, 60, 70] + [61, 71] * 8),  # one 19-byte event: too long for a record
          bytes([0x90, 60, 70])]
client = jack.jack_client_open(b"raw-sender", NO_START_SERVER, ctypes.byref(ctypes.c_int(0)))
port = jack.jack_port_register(client, b"out", MIDI_TYPE, PORT_IS_OUTPUT, 0)
go = []
@ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint32, P)
def process(nframes, _):
    buffer = jack.jack_port_get_buffer(port, nframes)
    jack.jack_midi_clear_buffer(buffer)
    if go and events:
        event = events.pop(0)
        jack.jack_midi_event_write(buffer, 0, event, len(event))
    return 0
jack.jack_set_process_callback(client, ctypes.cast(process, P), None)
jack.jack_activate(client)
assert jack.jack_connect(client, b"raw-sender:out", sys.argv[1].encode()) == 0
time.sleep(0.2)
go.append(1)
time.sleep(0.5)
os._exit(0 if not events else 1)  # no close: the client goes with the process
"""


def test_messages_longer_than_a_record_are_dropped_and_counted(jack):
    # A longer event would overrun the ring's record: it must be dropped in C. improv's own
    # keyboard-and-synth carries 12 bytes at most, so a bare client in its own process sends them.
    import subprocess
    import sys

    received = []
    port = open_input("jack", "jm-long", None, received.append)
    try:
        result = subprocess.run([sys.executable, "-c", RAW_SENDER, "jm-long:in"], capture_output=True,
                                text=True, timeout=30)
        assert result.returncode == 0, result.stderr[-2000:]
        assert wait_for(lambda: received)
        time.sleep(0.05)
        assert [raw.data for raw in received] == [[0x90, 60, 70]]
        assert port.client.counter("filtered") == 2
    finally:
        port.close()
