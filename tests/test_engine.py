"""The engine on a virtual clock, with the shipped model: what a player would hear, checked."""


import numpy as np
import pytest

from improv.config import Config
from improv.engine import Engine
from improv.events import Msg, decode_tokens
from improv.offline import VirtualClock, continue_performance, perform, run_until


def phrase(start_s=0.0, pitches=(60, 62, 64, 65, 67, 65, 64, 62), step_s=0.25, velocity=80):
    messages = []
    for i, pitch in enumerate(pitches):
        on = start_s + i * step_s
        messages += [(on, Msg("note_on", pitch, velocity)), (on + step_s * 0.9, Msg("note_off", pitch, 0))]
    return messages


def make_engine(model, **changes):
    config = Config()
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        setattr(getattr(config, section), key, value)
    clock = VirtualClock(0.0)
    return Engine(model, config, 0.0, np.random.default_rng(0), record_history=True), clock


def pair_up(events):
    """(pitch, on_s, off_s) for each improv note; asserts every note-on got its note-off."""
    sounding, notes = {}, []
    for e in events:  # in the order they were sent
        if e.is_on:
            assert e.pitch not in sounding, f"note {e.pitch} struck twice without a note-off"
            sounding[e.pitch] = e.time_s
        elif e.pitch in sounding:
            notes.append((e.pitch, sounding.pop(e.pitch), e.time_s))
    assert not sounding, f"stuck notes: {sorted(sounding)}"
    return notes


def test_call_response_answers_after_silence_and_releases_every_note(shipped_model):
    engine, clock = make_engine(shipped_model, engine__silence_ms=400, engine__response_ms=3000)
    played = phrase()
    out = perform(engine, clock, played)
    assert out == []  # no answer while the player plays
    last_key_up = played[-1][0]
    out = run_until(engine, clock, last_key_up + 5.0) + engine.stop(clock.now())
    onsets = [e.time_s for e in out if e.is_on]
    assert onsets, "no answer"
    assert last_key_up + 0.4 - 0.005 <= onsets[0] <= last_key_up + 0.4 + 0.03
    assert max(onsets) <= last_key_up + 0.4 + 3.0
    pair_up(out)


def test_playing_over_an_answer_stops_it_and_the_model_heard_exactly_what_sounded(shipped_model):
    engine, clock = make_engine(shipped_model, engine__silence_ms=300, engine__response_ms=8000,
                                engine__lookahead_ms=500)
    first = phrase()
    out = perform(engine, clock, first)
    answer_start = first[-1][0] + 0.3
    out += run_until(engine, clock, answer_start + 1.0)
    assert engine.pending, "the engine should be generating ahead"
    interrupt_s = clock.now() + 0.003
    second = phrase(start_s=interrupt_s, pitches=(72, 71))
    out += perform(engine, clock, second[:1])
    # improv stops at once: its sounding notes are released at the interruption, nothing new follows
    later = run_until(engine, clock, interrupt_s + 0.2)
    assert not [e for e in later if e.is_on]
    sent = pair_up(out + engine.stop(clock.now()))
    assert all(off <= interrupt_s + 1e-9 for _, _, off in sent)

    # The model's context is exactly what was heard: player notes and improv's sent notes...
    heard = decode_tokens(engine.vocab, engine.history)
    # (the model hears times on its 10 ms grid; improv plays them at exact times: within 5 ms)
    improv_heard = sorted((n.pitch, n.onset_s) for n in heard if n.onset_s >= answer_start - 0.006)
    expected = sorted([(p, on) for p, on, _ in sent] + [(72, interrupt_s)])
    assert [p for p, _ in improv_heard] == [p for p, _ in expected]
    assert all(abs(a - b) <= 0.0051 for (_, a), (_, b) in zip(improv_heard, expected)), (improv_heard, expected)
    # ...and its state is that of a fresh model fed exactly those tokens.
    expected_h, expected_c = fresh_state(shipped_model, engine.history, engine.history_calls)
    h, c = shipped_model.snapshot()
    assert np.allclose(h, expected_h, atol=1e-5) and np.allclose(c, expected_c, atol=1e-5)


def fresh_state(model, tokens, calls):
    """The state of a fresh model fed `tokens` in the same calls as the engine fed them (`calls`:
    tokens fed after each call). The grouping matters: int8 models quantize activations per call."""
    saved = model.snapshot()
    model.reset()
    start = 0
    for end in calls:
        if end - start == 1:
            model.step(tokens[start])
        else:
            model.prime(tokens[start:end])
        start = end
    state = model.snapshot()
    model.reset()
    model.restore(saved)
    return state


def test_continuous_mode_plays_along_while_the_player_plays(shipped_model):
    engine, clock = make_engine(shipped_model, engine__mode="continuous", engine__response_ms=2000)
    played = phrase(pitches=(60, 64, 67, 72) * 4, step_s=0.4)
    out = perform(engine, clock, played)
    out += run_until(engine, clock, played[-1][0] + 3.0) + engine.stop(clock.now())
    during = [e for e in out if e.is_on and e.time_s < played[-1][0]]
    assert len(during) >= 3, "improv should play while the player plays"
    pair_up(out)


def test_limits_hold_for_every_note(shipped_model):
    engine, clock = make_engine(shipped_model, engine__response_ms=20000, limits__max_note_ms=150,
                                limits__pitch_low=55, limits__pitch_high=70, limits__max_polyphony=2,
                                sampling__temperature=1.5)
    out = perform(engine, clock, phrase())
    out += run_until(engine, clock, 25.0) + engine.stop(clock.now())
    notes = pair_up(out)
    assert len(notes) > 10
    assert all(55 <= p <= 70 for p, _, _ in notes)
    assert all(off - on <= 0.150 + 1e-6 for _, on, off in notes)
    events = sorted([(on, 1) for _, on, _ in notes] + [(off, -1) for _, _, off in notes], key=lambda x: (x[0], x[1]))
    assert max(np.cumsum([d for _, d in events])) <= 2


def test_panic_releases_everything_at_once(shipped_model):
    engine, clock = make_engine(shipped_model, engine__silence_ms=100, limits__max_note_ms=4000)
    out = perform(engine, clock, phrase())
    out += run_until(engine, clock, clock.now() + 1.5)
    sounding = set(engine.sent)
    released = engine.panic(clock.now())
    assert {e.pitch for e in released} == sounding and all(not e.is_on for e in released)
    assert not engine.sent and not engine.pending
    assert not [e for e in run_until(engine, clock, clock.now() + 3.0) if e.is_on]


def test_generate_continues_a_seed_through_the_same_engine(shipped_model):
    seed = phrase()
    config = Config()
    out = continue_performance(shipped_model, config, seed, 4.0, np.random.default_rng(3))
    notes = pair_up(out)
    assert notes and min(on for _, on, _ in notes) >= seed[-1][0] + config.engine.silence_ms / 1000 - 0.006
    assert config == Config(), "the caller's config is not changed"


class _Control:
    """A sustain pedal message (CC 64)."""

    type, control, channel = "control_change", 64, 0

    def __init__(self, value):
        self.value = value


def test_call_response_waits_while_the_pedal_lets_the_phrase_ring(shipped_model):
    engine, clock = make_engine(shipped_model, engine__silence_ms=300)
    messages = [(0.0, _Control(127)), (0.0, Msg("note_on", 60, 80)), (0.3, Msg("note_off", 60, 0)),
                (2.0, _Control(0))]
    out = perform(engine, clock, messages)
    assert not [e for e in out if e.is_on], "improv answered while the phrase still rang under the pedal"
    out = run_until(engine, clock, 4.0) + engine.stop(clock.now())
    onsets = [e.time_s for e in out if e.is_on]
    assert onsets and 2.3 - 0.006 <= onsets[0] <= 2.33


def test_a_pedal_change_between_generated_notes_is_not_lost_on_rollback(shipped_model):
    engine, clock = make_engine(shipped_model, engine__mode="continuous", engine__lookahead_ms=400)
    out = perform(engine, clock, [(0.0, _Control(127)), (0.0, Msg("note_on", 60, 80)), (0.2, _Control(0))])
    out += run_until(engine, clock, 0.6)
    out += engine.on_player(clock.now(), Msg("note_off", 60, 0))
    heard = decode_tokens(engine.vocab, engine.history)
    player_60 = [n for n in heard if n.pitch == 60 and n.onset_s == 0.0]
    assert player_60 and abs(player_60[0].offset_s - 0.6) < 0.011, "the model did not hear the key go up"


def test_a_key_struck_while_improv_sounds_it_ends_improvs_note(shipped_model):
    engine, clock = make_engine(shipped_model, engine__mode="continuous", limits__max_note_ms=4000)
    out = perform(engine, clock, [(0.0, Msg("note_on", 40, 80)), (0.1, Msg("note_off", 40, 0))])
    for _ in range(200):
        out += run_until(engine, clock, clock.now() + 0.05)
        if engine.sent:
            break
    pitch = next(iter(engine.sent))
    released = engine.on_player(clock.now(), Msg("note_on", pitch, 80))
    assert (pitch, False) in [(e.pitch, e.is_on) for e in released]
    assert pitch not in engine.sent and pitch not in engine.decoder.sounding


def test_continuous_mode_comes_in_at_once_even_on_a_chord(shipped_model):
    engine, clock = make_engine(shipped_model, engine__mode="continuous")
    chord = [(1.0, Msg("note_on", p, 80)) for p in (60, 64, 67)]
    out = perform(engine, clock, chord) + run_until(engine, clock, 1.2)
    onsets = [e.time_s for e in out if e.is_on]
    assert onsets and onsets[0] <= 1.0 + 0.011, onsets[:3]


def test_a_due_note_goes_out_before_the_model_steps_on_it(shipped_model):
    engine, clock = make_engine(shipped_model, engine__mode="continuous")
    emitted = []  # (event, tokens the model had been fed when the event went out)
    engine.emit = lambda event: emitted.append((event, len(engine.history)))
    returned = perform(engine, clock, [(1.0, Msg("note_on", 60, 80))])
    returned += engine.poll(clock.now())  # the live loop polls right after a player's message
    first_on, fed_before = next((e, n) for e, n in emitted if e.is_on)
    assert first_on.time_s == pytest.approx(1.0) and first_on not in returned
    # the note left first; the very next token the model was fed is that note
    assert engine.history[fed_before] == engine.vocab.note_on(first_on.pitch)
    # and nothing is lost: the rest of the performance still pairs every note-on with its note-off
    later = run_until(engine, clock, 3.0)
    sent = [e for e, _ in emitted] + returned + later + engine.stop(clock.now())
    pair_up(sent)


@pytest.mark.parametrize("velocity", [25, 80, 120])
def test_continuous_mode_answers_a_note_from_silence_with_no_model_step_between(shipped_model, velocity):
    # The player's note is fed, then improv's first note is sampled straight from those logits: at
    # the velocity just heard, with no VELOCITY token (and its model step) in between.
    engine, clock = make_engine(shipped_model, engine__mode="continuous")
    emitted = []
    engine.emit = lambda event: emitted.append((event, len(engine.history)))
    perform(engine, clock, [(1.0, Msg("note_on", 60, velocity))])
    heard = len(engine.history)
    engine.poll(clock.now())
    first_on, fed_before = next((e, n) for e, n in emitted if e.is_on)
    assert fed_before == heard and engine.history[heard] == engine.vocab.note_on(first_on.pitch)
    vocab = engine.vocab
    assert first_on.velocity == vocab.bin_to_velocity(vocab.velocity_to_bin(velocity))


def test_a_note_sent_early_is_what_an_interruption_rolls_back_to(shipped_model):
    engine, clock = make_engine(shipped_model, engine__mode="continuous")
    emitted = []
    engine.emit = emitted.append
    perform(engine, clock, [(1.0, Msg("note_on", 60, 80))])
    engine.poll(clock.now())
    first_on = next(e for e in emitted if e.is_on)
    # the player plays again before anything else went out: improv's early note was heard
    engine.on_player(clock.now(), Msg("note_on", 64, 80))
    assert engine.vocab.note_on(first_on.pitch) in engine.history
    h, c = shipped_model.snapshot()
    expected_h, expected_c = fresh_state(shipped_model, engine.history, engine.history_calls)
    assert np.allclose(h, expected_h, atol=1e-5) and np.allclose(c, expected_c, atol=1e-5)
