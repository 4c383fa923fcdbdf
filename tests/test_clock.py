"""Following MIDI clock and placing onsets on a grid: tempo through jitter and bursts, Start, Stop,
Continue and Song Position, swing and strength."""

import random

import pytest

from improv.clock import PULSES_PER_QUARTER, ClockFollower, Grid, PlayerTempo


def pulses(follower, bpm, beats, start_s=0.0, jitter_s=0.0, seed=0, first_pulse=0):
    """Send `beats` quarter notes of clock at `bpm`; returns the ideal time of the next pulse."""
    rng = random.Random(seed)
    period = 60.0 / bpm / PULSES_PER_QUARTER
    count = int(beats * PULSES_PER_QUARTER)
    for i in range(count):
        follower.pulse(start_s + (first_pulse + i) * period + rng.uniform(-jitter_s, jitter_s))
    return start_s + (first_pulse + count) * period


@pytest.mark.parametrize("bpm", [90, 120, 150])
def test_tempo_within_half_a_bpm_after_two_bars_of_jittered_clock(bpm):
    follower = ClockFollower()
    follower.start(0.0)
    pulses(follower, bpm, beats=8, jitter_s=0.0005, seed=bpm)
    assert follower.bpm == pytest.approx(bpm, abs=0.5)


def test_the_beat_is_where_the_clock_says():
    follower = ClockFollower()
    follower.start(0.0)
    pulses(follower, 120, beats=4, jitter_s=0.0005)
    assert follower.beat_at(2.5) == pytest.approx(5.0, abs=0.01)  # 120 bpm: two beats a second
    assert follower.time_of_beat(6.0) == pytest.approx(3.0, abs=0.005)


def test_a_burst_after_a_stall_moves_the_position_but_not_the_tempo():
    follower = ClockFollower()
    follower.start(0.0)
    next_s = pulses(follower, 120, beats=4)
    for i in range(12):  # a DAW catching up: twelve pulses in a millisecond
        follower.pulse(next_s + 0.3 + i * 0.0001)
    assert follower.bpm == pytest.approx(120, abs=0.5)
    assert follower.position == 4 * PULSES_PER_QUARTER + 12


def test_song_position_then_continue_puts_the_beat_where_the_pointer_says():
    follower = ClockFollower()
    follower.start(0.0)
    pulses(follower, 120, beats=4)
    follower.stop(2.0)
    follower.song_position(32)  # sixteenth 32: beat 8
    follower.proceed(5.0)
    pulses(follower, 120, beats=2, start_s=5.0)
    assert follower.beat_at(5.0) == pytest.approx(8.0, abs=0.01)


def test_clock_while_stopped_is_counted_and_ignored():
    follower = ClockFollower()
    follower.pulse(0.0)
    follower.pulse(0.02)
    assert follower.bpm is None and follower.ignored["stopped"] == 2 and follower.position == 0


@pytest.mark.parametrize("before, after, beats", [(120, 140, 2), (140, 100, 1)])
def test_a_tempo_change_is_followed_within_a_beat_or_two(before, after, beats):
    # Faster: the pulses are fitted at once. Slower: taken up after a dozen late pulses.
    follower = ClockFollower()
    follower.start(0.0)
    next_s = pulses(follower, before, beats=4)
    pulses(follower, after, beats=beats, start_s=next_s)
    assert follower.bpm == pytest.approx(after, abs=0.5)


def test_grid_strength_zero_is_exactly_free_and_one_is_on_the_grid():
    assert Grid("1/16", strength=0.0).place(1.137) == 1.137
    assert Grid("1/16", strength=1.0).place(1.137) == pytest.approx(1.25)
    assert Grid("1/16", strength=0.5).place(1.137) == pytest.approx(1.1935)
    assert Grid("1/8t", strength=1.0).place(0.30) == pytest.approx(1 / 3)


def test_swing_moves_every_second_line_later():
    swung = Grid("1/8", swing=0.5, strength=1.0)
    assert swung.place(0.02) == pytest.approx(0.0)  # on the beat: not moved
    assert swung.place(0.70) == pytest.approx(0.75)  # the off-beat eighth, half an eighth late


def test_a_source_that_jumps_without_start_is_followed_again():
    follower = ClockFollower()
    follower.start(0.0)
    next_s = pulses(follower, 120, beats=4)
    pulses(follower, 100, beats=3, start_s=next_s + 5.0)  # paused for 5 s, then on at another tempo
    assert follower.bpm == pytest.approx(100, abs=0.5)


def test_a_burst_with_no_stall_before_it_is_ignored_and_the_beat_stays_tied_to_the_time():
    follower = ClockFollower()
    follower.start(0.0)
    next_s = pulses(follower, 120, beats=4)
    for i in range(1000):  # a broken source: a thousand pulses in 10 ms
        follower.pulse(next_s - 0.015 + i * 0.00001)
    next_s = pulses(follower, 120, beats=2, first_pulse=4 * PULSES_PER_QUARTER)
    assert follower.ignored["early"] >= 999
    assert follower.bpm == pytest.approx(120, abs=0.5)
    # A burst pulse half a pulse or more after the last one can take the place of the real pulse that
    # follows it: the beat may slip by that one pulse, never by the burst.
    assert follower.beat_at(next_s) == pytest.approx(6.0, abs=1 / PULSES_PER_QUARTER + 0.01)


def test_a_second_clock_source_on_the_same_input_is_ignored():
    follower = ClockFollower()
    follower.start(0.0)
    period = 60.0 / 120 / PULSES_PER_QUARTER
    for i in range(8 * PULSES_PER_QUARTER):
        follower.pulse(i * period)
        if i >= PULSES_PER_QUARTER:  # another sequencer at 137 BPM joins after a beat
            follower.pulse(0.503 + (i - PULSES_PER_QUARTER) * 60.0 / 137 / PULSES_PER_QUARTER)
    assert follower.bpm == pytest.approx(120, abs=0.5)
    assert follower.ignored["early"] > 0


def played(bpm, steps, seconds=6.0, jitter_s=0.01, seed=0):
    rng, beat, t, out = random.Random(seed), 60.0 / bpm, 1.0, []
    while t < 1.0 + seconds:
        out.append(t + rng.uniform(-jitter_s, jitter_s))
        t += steps[len(out) % len(steps)] * beat
    return out


@pytest.mark.parametrize("bpm", [90, 108, 132, 150])
@pytest.mark.parametrize("steps", [[1], [0.5], [0.5, 0.5, 1, 0.25, 0.25, 0.5, 1.5, 0.5], [0.75, 0.25, 1, 1, 0.5, 0.5]])
def test_the_players_tempo_is_heard_from_their_onsets(bpm, steps):
    tempo = PlayerTempo()
    for onset in played(bpm, steps, seed=bpm):
        tempo.note_on(onset)
    assert tempo.bpm == pytest.approx(bpm, abs=1.0)


def test_a_slow_or_fast_players_tempo_is_heard_as_itself_or_its_double_or_half():
    # A tempo and its double put the same notes on a grid: which one is heard is a matter of taste.
    for bpm in (66, 170):
        tempo = PlayerTempo()
        for onset in played(bpm, [0.5, 0.5, 1, 0.25, 0.25, 0.5, 1.5, 0.5], seed=bpm):
            tempo.note_on(onset)
        assert min(abs(tempo.bpm - bpm * factor) for factor in (0.5, 1, 2)) <= 1.0, tempo.bpm


def test_no_tempo_is_heard_from_too_few_notes():
    tempo = PlayerTempo()
    for onset in played(120, [1], seconds=2.0)[: PlayerTempo.MIN_ONSETS - 1]:
        tempo.note_on(onset)
    assert tempo.bpm is None


def test_pulses_lost_on_the_way_are_counted_so_the_beat_stays_on_time():
    follower = ClockFollower()
    follower.start(0.0)
    period = 60.0 / 120 / PULSES_PER_QUARTER
    times = [i * period for i in range(8 * PULSES_PER_QUARTER) if not 50 <= i < 53]  # a missed cycle's three
    for time_s in times:
        follower.pulse(time_s)
    assert follower.ignored["lost"] == 3
    assert follower.beat_at(times[-1]) == pytest.approx(8 - 1 / PULSES_PER_QUARTER, abs=1e-6)
