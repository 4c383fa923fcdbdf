"""MIDI clock and exact input times, through a real JACK server: improv's own client (clock pulses
counted in C and read in a batch, every message with its own frame time) and python-rtmidi's."""

import random
import time

import pytest

from conftest import wait_for
from improv.errors import PortError
from improv.midi import jack as jackmidi
from improv.midi.backend import open_input
from improv.midi.messages import CONTINUE, SONG_POSITION, START, STOP, RawInput
from improv.tools.probe import ProbeClient

pytestmark = [pytest.mark.jack,
              pytest.mark.skipif(not jackmidi.available(), reason="the native JACK client was not built")]

# A message sent at a due time is read at that time, to the frame: what is left is not the frame
# (21 us at 48 kHz) but the two clients' clocks, each read when its own callback starts, the listener
# a little after the sender in the same cycle. Measured over 2,880 pulses with jitter, here, with
# other tests running: median 26-41 us, 99% within 82-130 us; and about one in 3,000 off by up to
# 5 ms when the machine held a callback back (no xrun, no late cycle to tell). So: nearly all within
# FRAME_S, every one inside its period. Stamped with its cycle's start instead, a message would be
# off by anything up to a period (10.7 ms), and some 2% of them within FRAME_S.
FRAME_S = 0.0002
SHARE_AT_FRAME = 0.95


def read_pulses(port, count: int, timeout_s: float) -> list[float]:
    """Read clock pulses in batches, as the engine would, until `count` came (and a moment more, to
    see that no more come)."""
    pulses: list[float] = []
    deadline = time.monotonic() + timeout_s
    while len(pulses) < count and time.monotonic() < deadline:
        time.sleep(0.02)
        pulses += port.clock_pulses()
    time.sleep(0.1)
    return pulses + port.clock_pulses()


def assert_at_frames(times_s, dues_s, period_s: float, late=frozenset()) -> None:
    """Each time is its due time to the frame (see FRAME_S), leaving out those the probe handed to
    JACK too late to be sure of their frame (`late`: its thread held back by the machine)."""
    assert len(times_s) == len(dues_s)
    errors_ms = sorted(1000 * abs(t - due) for t, due in zip(times_s, dues_s) if due not in late)
    assert len(errors_ms) >= 0.9 * len(dues_s), f"the probe handed {len(late)} messages over late"
    exact = sum(error_ms <= 1000 * FRAME_S for error_ms in errors_ms)
    median_ms = errors_ms[len(errors_ms) // 2]
    assert exact >= SHARE_AT_FRAME * len(errors_ms), \
        f"{exact} of {len(errors_ms)} within {1000 * FRAME_S} ms of their due times; median {median_ms:.3f} ms"
    assert errors_ms[-1] < 1000 * period_s, f"one {errors_ms[-1]:.3f} ms from its due time"


@pytest.fixture
def listener(jack):
    """(probe, an input of improv's own client the probe plays into, what that input enqueued)."""
    probe = ProbeClient("ck-probe")
    received: list[RawInput] = []
    port = open_input("jack", "ck-in", None, received.append)
    try:
        probe.connect("ck-in:in", "ck-in:out")
        yield probe, port, received
    finally:
        port.close()
        probe.close()


@pytest.mark.parametrize("jitter,jitter_ms", [("uniform", 3.0), ("gauss", 1.5)])
def test_clock_pulses_are_read_in_a_batch_each_at_its_frame_through_jitter_and_a_tempo_change(listener, jitter,
                                                                                              jitter_ms):
    probe, port, received = listener
    # A bar of 120 BPM, a bar changing to 140, a bar of 140 (with the probe's own jitter on top).
    tempo = [(0.0, 120.0), (2.0, 120.0), (4.0, 140.0)]
    dues = probe.send_clock(tempo, 5.5, jitter_ms=jitter_ms, jitter=jitter, rng=random.Random(7))
    pulses = read_pulses(port, len(dues), 10.0)
    assert len(pulses) == len(dues), f"{len(pulses)} pulses read, {len(dues)} sent"
    assert pulses == sorted(pulses)
    assert_at_frames(pulses, dues, port.client.period_s, probe.clock_late())
    # Pulses never reach the message queue: only the Start before them does.
    assert [raw.data for raw in received] == [[START]]
    assert abs(received[0].at_s - dues[0]) < port.client.period_s
    assert port.client.counter("dropped_pulses") == 0 and not probe.clock_failures()


def test_start_stop_continue_and_song_position_arrive_as_messages_at_their_frames(listener):
    probe, port, received = listener
    start_s, sent = time.monotonic() + 0.5, []
    for bar in range(10):  # due times all over their periods
        bar_s = start_s + 0.1 * bar
        sent += [(probe.send_start(bar_s + 0.0013), [START]),
                 (probe.send_stop(bar_s + 0.0237), [STOP]),
                 (probe.send_song_position(300 + bar, bar_s + 0.0511), [SONG_POSITION, (300 + bar) & 0x7F, 2]),
                 (probe.send_continue(bar_s + 0.0773), [CONTINUE])]
    assert wait_for(lambda: len(received) == len(sent), 3.0), [raw.data for raw in received]
    assert [raw.data for raw in received] == [data for _, data in sent]
    assert_at_frames([raw.at_s for raw in received], [due_s for due_s, _ in sent], port.client.period_s,
                     probe.clock_late())
    assert all(raw.at_s <= raw.time_s for raw in received)  # its own time, then the start of its cycle
    assert port.clock_pulses() == []


def test_a_note_is_at_its_own_frame_not_at_the_start_of_its_cycle(listener):
    probe, port, received = listener
    period_s = port.client.period_s
    start_s = time.monotonic() + 0.3
    # Due times that fall all over their periods: stamped by their cycle's start, they would be up to
    # a period off; at their frames, they are where they were sent.
    dues = [start_s + i * 0.37 * period_s for i in range(40)]
    for i, due_s in enumerate(dues):
        probe.send_at(due_s, 0x90, 40 + i, 80)
    assert wait_for(lambda: len(received) == len(dues), 3.0)
    assert [raw.data[1] for raw in received] == [40 + i for i in range(40)]
    assert_at_frames([raw.at_s for raw in received], dues, period_s)
    assert all(raw.at_s <= raw.time_s for raw in received)
    cycle_lags_s = [raw.time_s - raw.at_s for raw in received]
    assert max(cycle_lags_s) - min(cycle_lags_s) > period_s / 2, "every note at the same place in its cycle"


def test_a_flood_of_clock_pulses_loses_no_note_sent_among_them(listener):
    probe, port, received = listener
    # 10,000 pulses in about a second (25,000 BPM: some 100 a JACK cycle), a note in the middle.
    dues = probe.send_clock(25_000, 1.0, start=False)
    assert len(dues) == 10_000
    note_s = probe.send_at(dues[5_000], 0x90, 64, 99)
    pulses = read_pulses(port, len(dues), 10.0)
    assert [raw.data for raw in received] == [[0x90, 64, 99]]
    assert abs(received[0].at_s - note_s) < port.client.period_s
    assert len(pulses) == 10_000 and port.client.counter("dropped_pulses") == 0
    assert port.client.counter("dropped_in") == 0 and not probe.clock_failures()


def test_pulses_nobody_reads_overflow_their_own_ring_counted_and_notes_still_arrive(listener):
    probe, port, received = listener
    kept = port.client.limits.pulses_kept
    dues = probe.send_clock(25_000, 1.0, start=False)  # 10,000 pulses, more than the ring keeps
    probe.send_at(dues[-1] + 0.01, 0x90, 65, 98)
    assert wait_for(lambda: received, 5.0)
    assert probe.wait_clock()
    time.sleep(0.1)
    assert [raw.data for raw in received] == [[0x90, 65, 98]]
    pulses = port.clock_pulses()  # the ring kept the first, and counted the rest as dropped
    assert len(pulses) == kept and max(abs(p - d) for p, d in zip(pulses, dues)) < port.client.period_s
    assert port.client.counter("dropped_pulses") == len(dues) - kept
    assert port.client.counter("pulses_in") == kept


def test_pulses_and_messages_from_before_an_input_opened_are_not_heard(jack):
    # The client outlives an input closed and opened again (the output holds it): what came
    # meanwhile is stale, pulses too.
    probe = ProbeClient("ck-stale")
    out = jackmidi.JackOutputPort("ck-stale-in", None)
    try:
        inp = open_input("jack", "ck-stale-in", None, lambda raw: None)
        probe.connect("ck-stale-in:in", "ck-stale-in:out")
        inp.close()
        dues = probe.send_clock(120, 0.5, start_s=time.monotonic() + 0.3)
        assert probe.wait_clock()
        time.sleep(0.05)
        received = []
        inp = open_input("jack", "ck-stale-in", None, received.append)
        assert inp.clock_pulses() == [] and received == [] and dues
        inp.close()
    finally:
        out.close()
        probe.close()


# -- several inputs --------------------------------------------------------------------------------
def test_one_input_hears_several_keyboards_and_their_clock_until_one_goes(jack):
    first, second = ProbeClient("ck-a"), ProbeClient("ck-b")
    received: list[RawInput] = []
    port = open_input("jack", "ck-both", ["ck-a-keys", "ck-b-keys:keys"], received.append)
    try:
        assert port.name == "ck-a-keys:keys, ck-b-keys:keys" and port.still_connected()
        time.sleep(0.1)
        first.send(0x90, 60, 70)
        second.send(0x90, 61, 71)
        assert wait_for(lambda: len(received) == 2)
        assert sorted(raw.data[1] for raw in received) == [60, 61]
        start_s = time.monotonic() + 0.5
        dues = first.send_clock(120, 0.5, start_s=start_s, start=False)
        dues += second.send_clock(120, 0.5, start_s=start_s + 0.01, start=False)
        pulses = read_pulses(port, len(dues), 3.0)
        assert_at_frames(pulses, sorted(dues), port.client.period_s, first.clock_late() | second.clock_late())
    finally:
        second.close()  # one keyboard unplugged
    try:
        assert wait_for(lambda: not port.still_connected())
    finally:
        port.close()
        first.close()


def test_a_name_not_found_among_several_is_refused_and_connects_nothing(jack):
    keys = ProbeClient("ck-only")
    try:
        with pytest.raises(PortError, match="no MIDI input port matches 'ck-nowhere'"):
            open_input("jack", "ck-refused", ["ck-only-keys", "ck-nowhere"], lambda raw: None)
        assert not keys.keys.connected_to("out", "ck-refused:in")
        assert "ck-refused" not in jackmidi.JackMidiClient._open
    finally:
        keys.close()


# -- python-rtmidi's JACK client --------------------------------------------------------------------
def test_rtmidi_counts_clock_pulses_apart_and_hears_several_keyboards(jack):
    # python-rtmidi stamps in its callback, on JACK's thread: a period or two after the frame, not at it.
    first, second = ProbeClient("rt-a"), ProbeClient("rt-b")
    received: list[RawInput] = []
    port = open_input("jack-rtmidi", "rt-clock", ["rt-a-keys", "rt-b-keys"], received.append)
    try:
        assert port.name == "rt-a-keys:keys, rt-b-keys:keys" and port.still_connected()
        time.sleep(0.2)
        start_s = time.monotonic() + 0.5
        dues = first.send_clock(120, 1.0, start_s=start_s)
        second.send_at(start_s + 0.5, 0x90, 62, 72)
        pulses = read_pulses(port, len(dues), 5.0)
        assert len(pulses) == len(dues)
        late_limit_s = 3 * first.keys.period_s + 0.05  # the cycle out, rtmidi's cycle, its callback, a loaded VM
        assert all(due_s - 0.001 <= pulse_s <= due_s + late_limit_s for pulse_s, due_s in zip(pulses, dues))
        assert wait_for(lambda: len(received) == 2)
        assert sorted(raw.data for raw in received) == [[0x90, 62, 72], [START]]
        assert all(raw.at_s == raw.time_s for raw in received)
    finally:
        second.close()
    try:
        assert wait_for(lambda: not port.still_connected())
    finally:
        port.close()
        first.close()


def test_rtmidi_refuses_a_name_not_found_among_several(jack):
    keys = ProbeClient("rt-only")
    try:
        with pytest.raises(PortError, match="no MIDI input port matches 'rt-nowhere'"):
            open_input("jack-rtmidi", "rt-refused", ["rt-only-keys", "rt-nowhere"], lambda raw: None)
        assert not [peer for peer in keys.keys.peers("out") if peer.startswith("rt-refused")]
    finally:
        keys.close()
