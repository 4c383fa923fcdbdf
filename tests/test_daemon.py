"""improv run through real ports of a real JACK server: a test client plays and listens."""

import signal
import time

import pytest

from conftest import wait_for
from improv.tools.probe import ProbeClient, note_ons, sounding_after
from jackserver import PERIOD_FRAMES, RATE, launch_improv, stop_improv

pytestmark = pytest.mark.jack
SILENCE_MS = 300
GENEROUS_MS = 100  # tests bound behaviour on a shared machine; the benchmark measures tightly


def run_improv(client, *args):
    return launch_improv(client, "--no-record", "--silence-ms", str(SILENCE_MS), *args)


def test_call_and_response_answers_after_the_silence_and_releases_every_note(client):
    process = run_improv(client, "--config", "tests/data/short-answers.yaml")
    try:
        for _ in range(3):
            last_up = client.play([60, 64, 67, 72, 67, 64])
            time.sleep(SILENCE_MS / 1000 + 2.5)  # the answer is at most 1.5 s long
            events = client.drain()
            ons = note_ons(events)
            assert ons, "no answer"
            first_ms = (ons[0][0] - last_up) * 1000
            assert SILENCE_MS - 1 <= first_ms <= SILENCE_MS + GENEROUS_MS, first_ms
            assert not sounding_after(events), "a note was left sounding after the answer"
    finally:
        code, stderr = stop_improv(process)
    assert code == 0, stderr


def test_playing_during_an_answer_stops_it_at_once(client):
    process = run_improv(client)
    try:
        client.play([60, 62, 64])
        wait_for(lambda: note_ons(client.pending()), timeout_s=SILENCE_MS / 1000 + 2.0)
        time.sleep(0.4)  # mid-answer
        interrupted_at = client.send(0x90, 72, 90)
        time.sleep(0.5)
        client.send(0x80, 72, 0)
        events = client.drain()
        # Notes already on their way when the key reached improv: a period in, a period out, and slack.
        late = [t for t, m in note_ons(events) if t > interrupted_at + 2 * PERIOD_FRAMES / RATE + 0.01]
        assert not late, f"improv went on playing {len(late)} notes after the player came in"
        assert not sounding_after(events)
    finally:
        stop_improv(process)


def test_sigterm_mid_answer_releases_every_sounding_note(client):
    process = run_improv(client, "--config", "tests/data/long-notes.yaml")
    try:
        client.play([48, 60, 64, 67])
        assert wait_for(lambda: sounding_after(client.pending()), timeout_s=5), "improv never had a note sounding"
    finally:
        code, stderr = stop_improv(process, signal.SIGTERM)
    time.sleep(0.2)
    events = client.drain()
    assert not sounding_after(events), f"stuck after SIGTERM: {sounding_after(events)}"
    assert code == 0, stderr


def test_continuous_mode_plays_along(client):
    process = run_improv(client, "--mode", "continuous")
    try:
        started = time.monotonic()
        client.play([60, 64, 67, 72] * 3, note_s=0.2, gap_s=0.1)
        ended = time.monotonic()
        events = client.drain()
        during = [t for t, _ in note_ons(events) if started < t < ended]
        assert len(during) >= 3, "improv should answer while the player plays"
    finally:
        stop_improv(process)
    assert not sounding_after(events + client.drain())


def test_an_unknown_port_stops_the_start_with_one_clear_line(jack):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "improv.cli", "run", "--backend", "jack", "--no-record",
                             "--in", "no-such-keyboard"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "no MIDI input port matches 'no-such-keyboard'" in result.stderr


def test_routing_channels_pass_through_and_live_controls(client):
    process = run_improv(client, "--config", "tests/data/routing.yaml")
    try:
        # improv's clean slate at start (sustain off, all notes off on channel 3) may reach the
        # client after it connected: let it arrive and set it aside before asserting silence.
        wait_for(lambda: any(m == [0xB2, 123, 0] for _, m in client.pending()), timeout_s=1.0)
        client.drain()
        client.send(0x91, 62, 90)  # channel 2: filtered out, neither echoed nor answered
        time.sleep(0.1)
        client.send(0x81, 62, 0)
        time.sleep(SILENCE_MS / 1000 + 0.6)
        assert client.drain() == []
        client.play([60, 64])  # channel 1: echoed as played, answered on channel 3
        time.sleep(SILENCE_MS / 1000 + 1.5)
        events = client.drain()
        assert [m for _, m in events][:2] == [[0x90, 60, 90], [0x80, 60, 0]]
        answer = [m for m in note_ons(events) if m[1][0] & 0x0F != 0]
        assert answer and all(m[0] == 0x92 for _, m in answer)
        client.send(0xB0, 24, 0)  # CC 24 below 64: improv off, it only listens
        time.sleep(0.1)
        client.play([60, 64])
        time.sleep(SILENCE_MS / 1000 + 1.0)
        assert not [m for _, m in note_ons(client.drain()) if m[0] == 0x92]
        client.send(0xB0, 24, 127)  # and on again
        client.play([60, 64])
        time.sleep(SILENCE_MS / 1000 + 1.0)
        assert [m for _, m in note_ons(client.drain()) if m[0] == 0x92]
    finally:
        stop_improv(process)


def test_improv_play_sends_a_file_in_real_time(jack):
    import subprocess
    import sys

    from conftest import CHORALE

    synth = ProbeClient("listener")
    try:
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "improv.cli", "play", str(CHORALE), "--out", "listener-synth",
                                 "--backend", "jack"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        events = synth.drain()
        ons = note_ons(events)
        assert len(ons) == 163 and not sounding_after(events)
        assert ons[-1][0] - ons[0][0] > 20  # the chorale lasts about 23 s and is played in time
        assert ons[0][0] >= started
    finally:
        synth.close()
