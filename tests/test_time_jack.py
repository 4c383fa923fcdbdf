"""improv in time through a real JACK server: a clock source (the probe's clock client) sends MIDI
clock with jitter, Start, Stop, Continue and Song Position into improv's input, and the probe hears
improv's notes at their frames."""

import random
import re
import time

import numpy as np
import pytest

from conftest import wait_for
from improv.tools.probe import note_ons, sounding_after
from jackserver import launch_improv, stop_improv

pytestmark = pytest.mark.jack
PULSES_PER_SIXTEENTH = 6
SILENCE_MS = 120


def launch_in_time(client, *args):
    return launch_improv(client, "--no-record", "--sync", "midi-clock", "--silence-ms", str(SILENCE_MS), *args)


def logged_tempos(stderr: str) -> list[float]:
    return [float(bpm) for bpm in re.findall(r"clock: ([0-9.]+) BPM", stderr)]


def off_the_grid_ms(onsets, lines) -> list[float]:
    """How far each onset is from the nearest of `lines` (sorted times), in ms."""
    lines = np.asarray(lines)
    at = np.clip(np.searchsorted(lines, onsets), 1, len(lines) - 1)
    return [1000 * min(abs(t - lines[i - 1]), abs(t - lines[i])) for t, i in zip(onsets, at)]


def answer_onsets(client, pitches=(60, 64), wait_s=1.0) -> list[float]:
    """Play a short phrase, wait for the answer; improv's note-on times, each at its frame."""
    client.drain_at()
    client.play(pitches, note_s=0.08, gap_s=0.02)
    time.sleep(SILENCE_MS / 1000 + wait_s)
    return [t for t, _ in note_ons(client.drain_at())]


@pytest.mark.parametrize("bpm", [90, 120, 150])
def test_the_tempo_of_a_jittery_clock_is_known_within_half_a_bpm_in_two_bars(client, bpm):
    process = launch_in_time(client)
    try:
        dues = client.send_clock(bpm, seconds=8 * 60 / bpm + 0.5, jitter_ms=0.5, rng=random.Random(bpm))
        time.sleep(max(0.0, dues[8 * 24] - time.monotonic()) + 0.2)  # two bars of 4/4 from the Start
    finally:
        client.stop_clock()
        code, stderr = stop_improv(process)
    tempos = logged_tempos(stderr)
    assert code == 0 and tempos, stderr[-2000:]
    print(f"clock at {bpm} BPM with 0.5 ms jitter: improv's tempo {tempos[0]:.3f} BPM a beat after Start")
    assert tempos[0] == pytest.approx(bpm, abs=0.5), tempos


def test_on_the_grid_improvs_onsets_fall_on_the_clocks_sixteenths(client):
    process = launch_in_time(client, "--grid", "1/16", "--grid-strength", "1", "--response-ms", "400")
    onsets, answers = [], 0
    try:
        dues = client.send_clock(120, seconds=120.0, jitter_ms=0.5, rng=random.Random(7))
        time.sleep(max(0.0, dues[2 * 24] - time.monotonic()))  # two beats: the tempo is known
        deadline = time.monotonic() + 100.0
        while answers < 50 and time.monotonic() < deadline:
            heard = answer_onsets(client, wait_s=0.6)
            answers += bool(heard)
            onsets += heard
    finally:
        client.stop_clock()
        code, stderr = stop_improv(process)
    assert answers == 50, f"{answers} answers\n{stderr[-2000:]}"
    off_ms = off_the_grid_ms(onsets, dues[::PULSES_PER_SIXTEENTH])
    print(f"{len(onsets)} onsets in 50 answers: off the sixteenths p50 {np.percentile(off_ms, 50):.3f} ms, "
          f"p99 {np.percentile(off_ms, 99):.3f} ms, max {max(off_ms):.3f} ms")
    assert np.percentile(off_ms, 99) < 2.0, sorted(off_ms)[-10:]
    assert code == 0, stderr


def test_song_position_then_continue_puts_improvs_bars_where_the_pointer_says(client):
    process = launch_in_time(client, "--start-on", "bar", "--response-bars", "1")
    try:
        first = client.send_clock(120, seconds=1.0)  # two beats from a Start, then Stop
        stop_s = client.send_stop(first[-1] + 0.005)
        client.send_song_position(34, stop_s + 0.1)  # sixteenth 34: beat 8.5, half a beat into bar 3
        continue_s = client.send_continue(stop_s + 0.3)
        dues = client.send_clock(120, seconds=8.0, start_s=continue_s + 0.002, start=False)
        time.sleep(max(0.0, dues[24] - time.monotonic()))
        onsets = answer_onsets(client, wait_s=2.5)
    finally:
        client.stop_clock()
        code, stderr = stop_improv(process)
    assert onsets, stderr[-2000:]
    # After Continue the pulses count on from beat 8.5: bar lines (beats 12, 16, ...) fall on pulses
    # 84, 180, ... of the second clock.
    bar_lines = dues[84::96]
    assert min(off_the_grid_ms(onsets[:1], [dues[0] - 10.0] + bar_lines)) < 2.0, (onsets[0], bar_lines[:3])
    assert code == 0, stderr


def test_stop_silences_improv_within_a_period_and_nothing_plays_until_start(client):
    process = launch_in_time(client, "--response-ms", "8000")
    try:
        dues = client.send_clock(120, seconds=3.0)
        time.sleep(max(0.0, dues[24] - time.monotonic()))
        client.drain_at()
        client.play([60, 64, 67], note_s=0.08, gap_s=0.02)
        wait_for(lambda: note_ons(client.pending_at()), timeout_s=3.0)
        time.sleep(0.3)  # mid-answer
        stop_s = client.send_stop(time.monotonic() + 0.3)
        time.sleep(0.3 + 2.0)  # two seconds stopped, while the player plays
        client.play([62, 65], note_s=0.08, gap_s=0.02)
        time.sleep(SILENCE_MS / 1000 + 1.5)
        stopped = client.drain_at()
        restart = client.send_clock(120, seconds=4.0)
        time.sleep(max(0.0, restart[24] - time.monotonic()))
        after_start = answer_onsets(client, wait_s=1.5)
    finally:
        client.stop_clock()
        code, stderr = stop_improv(process)
    period_s = client.synth.period_s
    before = [(t, m) for t, m in stopped if t <= stop_s + period_s]
    assert note_ons(before), "improv was not answering when the Stop came"
    assert not sounding_after(before), f"still sounding a period after Stop: {sounding_after(before)}"
    assert not [t for t, _ in note_ons(stopped) if t > stop_s], "improv played while stopped"
    assert after_start, f"no answer after Start\n{stderr[-2000:]}"
    assert code == 0, stderr


def test_a_tempo_change_mid_answer_is_followed_within_a_beat(client):
    process = launch_in_time(client, "--grid", "1/16", "--response-ms", "12000")
    try:
        # 120 BPM for 3 s, then up to 140 over a bar of 4/4 (2 s at about 130), then 140.
        dues = client.send_clock([(0.0, 120.0), (3.0, 120.0), (4.85, 140.0)], seconds=12.0, jitter_ms=0.5,
                                 rng=random.Random(3))
        time.sleep(max(0.0, dues[24] - time.monotonic()))
        client.drain_at()
        client.play([60, 64, 67, 72], note_s=0.08, gap_s=0.02)
        time.sleep(max(0.0, dues[-1] - time.monotonic()))
        heard = client.drain_at()
    finally:
        client.stop_clock()
        code, stderr = stop_improv(process)
    ramp_end_s = dues[0] + 4.85
    followed_s = ramp_end_s + 60 / 140  # a beat after the tempo reached 140
    onsets = [t for t, _ in note_ons(heard) if t > followed_s]
    assert len(onsets) > 8, stderr[-2000:]
    off_ms = off_the_grid_ms(onsets, dues[::PULSES_PER_SIXTEENTH])
    assert max(off_ms) < 2.0, off_ms
    assert logged_tempos(stderr)[-1] == pytest.approx(140, abs=1.0)
    assert code == 0, stderr


def test_bad_clock_leaves_improv_answering_and_says_what_it_ignored(client):
    process = launch_in_time(client)
    try:
        client.send_clock(120, seconds=2.0, start=False)  # clock with no Start
        time.sleep(1.0)
        without_start = answer_onsets(client)
        dues = client.send_clock(120, seconds=10.0, jitter_ms=0.5)
        time.sleep(max(0.0, dues[48] - time.monotonic()))
        burst_s = time.monotonic() + 0.3
        for i in range(1000):  # a burst of 1,000 pulses in 10 ms
            client.send_transport(burst_s + i * 0.00001, 0xF8)
        # A second clock source at 97 BPM on the same input for two seconds.
        second = client.send_clock(97, seconds=2.0, start_s=burst_s + 0.2, start=False)
        time.sleep(max(0.0, second[-1] - time.monotonic()) + 0.2)
        with_bad_clock = answer_onsets(client)
    finally:
        client.stop_clock()
        code, stderr = stop_improv(process)
    assert without_start and with_bad_clock, stderr[-2000:]
    assert "transport stopped" in stderr and "closer together than the tempo allows" in stderr, stderr[-2000:]
    assert logged_tempos(stderr) and logged_tempos(stderr)[-1] == pytest.approx(120, abs=1.0), stderr[-2000:]
    assert code == 0, stderr
