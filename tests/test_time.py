"""Improv in time, on a virtual clock with the shipped model: onsets on the grid with swing, grid
strength 0 exactly free, answers that start on a bar and last whole bars, what the model hears
matching what was sent, a Stop that ends every note, a tempo change followed."""

import math

import numpy as np
import pytest

from improv.clock import PULSES_PER_QUARTER, ClockFollower, Grid
from improv.config import Config
from improv.engine import Engine
from improv.events import Decoder, Msg
from improv.midi.files import read_messages
from improv.offline import VirtualClock, continue_performance, perform, run_until
from conftest import CHORALE

SIXTEENTH = 0.25  # beats


def phrase(start_s=1.0, beat_s=0.5, pitches=(60, 64, 67, 72, 67, 64, 60, 62)):
    """Eighth notes from `start_s`: the player's phrase, its first note the downbeat."""
    out = []
    for i, pitch in enumerate(pitches):
        on = start_s + i * beat_s / 2
        out += [(on, Msg("note_on", pitch, 80)), (on + beat_s / 4, Msg("note_off", pitch, 0))]
    return out


def config_for(**time) -> Config:
    config = Config()
    config.sampling.seed = 7
    for key, value in time.items():
        setattr(config.time, key, value)
    return config.validate()


def answer(model, config, seconds=6.0, timeline=None, rng_seed=7):
    """Improv's events after the phrase, with the engine (its model history kept)."""
    clock = VirtualClock(0.0)
    engine = Engine(model, config, clock.now(), np.random.default_rng(rng_seed), record_history=True,
                    timeline=timeline)
    played = phrase()
    perform(engine, clock, played)
    events = run_until(engine, clock, played[-1][0] + seconds)
    return engine, events + engine.stop(clock.now())


def beats_of(times, origin_s=1.0, bpm=120.0):
    return [(t - origin_s) * bpm / 60.0 for t in times]


def test_onsets_fall_on_the_sixteenths_counted_from_the_players_downbeat(shipped_model):
    _, events = answer(shipped_model, config_for(bpm=120.0, grid="1/16", grid_strength=1.0))
    onsets = [e.time_s for e in events if e.is_on]
    assert len(onsets) > 10
    for beat in beats_of(onsets):
        assert beat / SIXTEENTH == pytest.approx(round(beat / SIXTEENTH), abs=1e-6)


def test_swing_moves_every_second_sixteenth_later(shipped_model):
    _, events = answer(shipped_model, config_for(bpm=120.0, grid="1/16", swing=0.5))
    grid = Grid("1/16", swing=0.5)
    lines = [grid.line(i) for i in range(200)]
    beats = beats_of([e.time_s for e in events if e.is_on])
    assert all(min(abs(beat - line) for line in lines) < 1e-6 for beat in beats)
    assert any(abs(beat / SIXTEENTH - round(beat / SIXTEENTH)) > 0.4 for beat in beats), "no swung onset"


def test_grid_strength_zero_gives_exactly_the_free_output():
    from improv.model import OnnxModel, default_model_path

    seed = read_messages(CHORALE)[:60]
    free = continue_performance(OnnxModel(default_model_path()), config_for(grid="off"), seed, 5.0,
                                np.random.default_rng(11))
    zero = continue_performance(OnnxModel(default_model_path()), config_for(grid="1/16", grid_strength=0.0), seed,
                                5.0, np.random.default_rng(11))
    assert len(free) > 10 and zero == free


def test_an_answer_starts_on_the_next_bar_and_lasts_whole_bars(shipped_model):
    config = config_for(bpm=120.0, meter="3/4", start_on="bar", response_bars=2)
    engine, events = answer(shipped_model, config, seconds=8.0)
    beats = beats_of([e.time_s for e in events])
    first_on = beats_of([e.time_s for e in events if e.is_on])[0]
    assert first_on % 3 == pytest.approx(0, abs=1e-6), first_on  # on a bar line of 3/4
    # The phrase ends at beat 4 (eight eighths); the silence takes it past the bar line at 6 to 9.
    assert first_on == pytest.approx(6.0, abs=1e-6) or first_on == pytest.approx(9.0, abs=1e-6)
    # Two bars of 3/4: its last notes end by the line (on it, when one still sounds there; a rest may end it).
    assert first_on + 3 < max(beats) <= first_on + 6 + 1e-6, beats


def test_what_the_model_heard_is_what_was_sent_within_a_step(shipped_model):
    engine, events = answer(shipped_model, config_for(bpm=97.0, grid="1/8t"), seconds=10.0)
    decoder = Decoder(shipped_model.vocab, origin_s=0.0)
    heard = [event for token in engine.history[1:] for event in decoder.feed(token)]
    sent_ons = [e for e in events if e.is_on]
    heard_ons = [e for e in heard if e.is_on][-len(sent_ons):]  # the player's come first
    assert [e.pitch for e in heard_ons] == [e.pitch for e in sent_ons]
    step_s = shipped_model.vocab.time_step_ms / 1000
    # The origin of the model's time is its first token (the engine's start, 0 s): no drift over the answer.
    drift = [abs(h.time_s - s.time_s) for h, s in zip(heard_ons, sent_ons)]
    assert max(drift) <= step_s, drift


def clocked(bpm_at, until_s, start_s=0.0):
    """Pulse times of a clock whose tempo is `bpm_at(time)`."""
    times, t = [], start_s
    while t < until_s:
        times.append(t)
        t += 60.0 / bpm_at(t) / PULSES_PER_QUARTER
    return times


def run_with_clock(engine, clock, follower, pulse_times, played, until_s):
    """Pulses, the player's messages and the engine's polls, in time order."""
    events = []
    timeline = sorted([(t, 0, None) for t in pulse_times] + [(t, 1, m) for t, m in played], key=lambda x: x[:2])
    for time_s, kind, msg in timeline:
        if time_s > until_s:
            break
        events += run_until(engine, clock, time_s)
        if kind == 0:
            follower.pulse(time_s)
        else:
            events += engine.on_player(clock.now(), msg)
    return events + run_until(engine, clock, until_s)


def test_a_stop_ends_every_note_at_once_and_nothing_plays_until_start(shipped_model):
    config = config_for(grid="1/16")
    config.engine.response_ms = 20_000
    clock, follower = VirtualClock(0.0), ClockFollower()
    engine = Engine(shipped_model, config, 0.0, np.random.default_rng(3), timeline=follower)
    follower.start(0.0)
    events = run_with_clock(engine, clock, follower, clocked(lambda t: 120.0, 8.0), phrase(), 8.0)
    assert any(e.is_on for e in events if e.time_s > 4.0), "no answer before the Stop"
    follower.stop(8.0)
    released = engine.poll(8.0)
    sounding = {e.pitch for e in sorted(events, key=lambda e: e.time_s) if e.is_on} - {
        e.pitch for e in events if not e.is_on and e.time_s >= max(x.time_s for x in events if x.is_on)}
    assert all(e.velocity == 0 and e.time_s == 8.0 for e in released)
    assert not engine.sent and not engine.pending
    later = run_with_clock(engine, clock, follower, [], phrase(start_s=9.0), 14.0)
    assert not [e for e in later if e.is_on], "improv played while the transport was stopped"
    del sounding


def test_a_tempo_change_mid_answer_is_followed_within_a_beat(shipped_model):
    # 120 BPM, then over one bar (from 6 s) up to 140 BPM, with an answer running across it.
    def bpm_at(t):
        return 120.0 if t < 6.0 else min(140.0, 120.0 + 20.0 * (t - 6.0) / 2.0)

    config = config_for(grid="1/16")
    config.engine.response_ms = 30_000
    clock, follower = VirtualClock(0.0), ClockFollower()
    engine = Engine(shipped_model, config, 0.0, np.random.default_rng(5), timeline=follower)
    follower.start(0.0)
    pulse_times = clocked(bpm_at, 16.0)
    events = run_with_clock(engine, clock, follower, pulse_times, phrase(), 16.0)
    sixteenths = pulse_times[:: PULSES_PER_QUARTER // 4]
    ramp_end_s = 8.0 + 60.0 / 140  # the tempo is 140 from 8 s on; a beat later improv must be on it
    onsets = [e.time_s for e in events if e.is_on and e.time_s > ramp_end_s]
    assert len(onsets) > 10
    off_ms = [1000 * min(abs(t - s) for s in sixteenths) for t in onsets]
    assert max(off_ms) < 2.0, off_ms
    assert math.isclose(follower.bpm, 140.0, abs_tol=0.5)


def test_with_follow_player_improv_takes_the_tempo_of_the_players_notes(shipped_model):
    # The phrase is eighths at 96 BPM; time.bpm says 140, which improv must not keep.
    config = config_for(bpm=140.0, follow_player=True, grid="1/8")
    clock = VirtualClock(0.0)
    engine = Engine(shipped_model, config, 0.0, np.random.default_rng(2))
    played = phrase(beat_s=60 / 96, pitches=(60, 62, 64, 65, 67, 69, 71, 72, 71, 69, 67, 65))
    perform(engine, clock, played)
    events = run_until(engine, clock, played[-1][0] + 6.0)
    onsets = [e.time_s for e in events if e.is_on]
    assert engine.timeline.bpm == pytest.approx(96, abs=1.0)
    eighth_s = 60 / engine.timeline.bpm / 2
    assert len(onsets) > 8
    assert all(((t - 1.0) / eighth_s) == pytest.approx(round((t - 1.0) / eighth_s), abs=1e-6) for t in onsets)


def test_generate_at_a_bpm_on_a_grid_writes_a_file_a_daw_imports_in_time(tmp_path):
    import subprocess
    import sys

    import mido

    out = tmp_path / "in-time.mid"
    result = subprocess.run([sys.executable, "-m", "improv.cli", "generate", "--seed", str(CHORALE), "--out", str(out),
                             "--seconds", "6", "--random-seed", "3", "--bpm", "100", "--grid", "1/8", "--meter", "3/4"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    take = mido.MidiFile(out)
    metas = {m.type: m for track in take.tracks for m in track if m.is_meta}
    assert mido.tempo2bpm(metas["set_tempo"].tempo) == pytest.approx(100)
    assert (metas["time_signature"].numerator, metas["time_signature"].denominator) == (3, 4)
    ticks, onsets = 0, []
    for message in take.tracks[1]:  # improv's track: its onsets on the file's eighths
        ticks += message.time
        if message.type == "note_on" and message.velocity > 0:
            onsets.append(ticks / take.ticks_per_beat)
    assert len(onsets) > 10
    assert all(abs(beat * 2 - round(beat * 2)) < 0.01 for beat in onsets), onsets
