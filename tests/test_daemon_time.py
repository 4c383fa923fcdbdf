"""The daemon's handling of MIDI clock through in-memory ports: exact and fast. The timing itself is
measured through JACK in test_time_jack.py."""

import time

import pytest

from conftest import wait_for
from improv.daemon import PULSE_SETTLE_S
from improv.midi.messages import RawInput
from improv.tools.probe import note_ons, sounding_after
from memory_midi import MemoryMidi
from test_daemon_memory import PHRASE, daemon_with, make_config  # noqa: F401 (daemon_with is a fixture)

START, STOP, PULSE_S = 0xFA, 0xFC, 60.0 / 120 / 24


def clock_from(midi: MemoryMidi, start_s: float, pulses: int, start: bool = True) -> list[float]:
    """A Start at `start_s` and pulses at 120 BPM from it: the pulses come first, as the native
    client's ring may hand them over before the reader thread queues the Start."""
    times = [start_s + i * PULSE_S for i in range(pulses)]
    midi.inputs[0].pulses.extend(times)
    if start:
        midi.deliver(RawInput(time.monotonic(), [START], at_s=start_s))
    return times


def test_a_start_queued_after_its_pulses_were_read_is_still_heard_before_them(daemon_with):
    daemon, midi = daemon_with(make_config(time__sync="midi-clock"))
    times = clock_from(midi, time.monotonic() - 0.01, 48)
    assert wait_for(lambda: not daemon.pulses and daemon.follower.position == 48, timeout_s=2 + PULSE_SETTLE_S * 4)
    assert daemon.follower.ignored["stopped"] == 0
    assert daemon.follower.beat_at(times[24]) == pytest.approx(1.0, abs=1e-6)  # the first pulse was the downbeat


def test_stop_releases_improvs_notes_at_once_and_it_waits_for_start(daemon_with):
    daemon, midi = daemon_with(make_config(time__sync="midi-clock", engine__response_ms=5000))
    start_s = time.monotonic()
    clock_from(midi, start_s, 24 * 20)
    midi.phrase(PHRASE)
    assert wait_for(lambda: note_ons(midi.sent), timeout_s=3.0), "no answer"
    midi.deliver(RawInput(time.monotonic(), [STOP], at_s=time.monotonic()))
    wait_for(lambda: not daemon.engine.sent, timeout_s=1.0)
    stopped_s = time.monotonic()
    assert not sounding_after(midi.sent)
    midi.phrase(PHRASE)
    time.sleep(0.6)
    assert not [t for t, _ in note_ons(midi.sent) if t > stopped_s], "improv played while stopped"
    clock_from(midi, time.monotonic(), 24 * 8)
    midi.phrase(PHRASE)
    assert wait_for(lambda: [t for t, _ in note_ons(midi.sent) if t > stopped_s], timeout_s=3.0), "no answer after Start"
