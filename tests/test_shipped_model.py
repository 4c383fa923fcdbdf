"""The shipped model continues real pieces in a way a listener would call music."""

import numpy as np
import pytest

from improv.config import Config
from improv.model import BOUND_PRIME_LENGTHS
from improv.midi.files import read_messages
from improv.musicstats import note_stats
from improv.offline import continue_performance

from conftest import CHORALE, EXPRESSIVE


@pytest.mark.parametrize("seed_file", [CHORALE, EXPRESSIVE], ids=lambda p: p.stem)
@pytest.mark.parametrize("random_seed", [0, 1, 2])
def test_a_continuation_has_register_variety_rhythm_and_no_long_silence(shipped_model, seed_file, random_seed):
    seed = read_messages(seed_file)
    seed_pitches = sorted(m.note for _, m in seed if m.type == "note_on" and m.velocity > 0)
    events = continue_performance(shipped_model, Config(), seed, 8.0, np.random.default_rng(random_seed))
    stats = note_stats(events)
    assert stats["notes"] >= 12, stats
    assert abs(stats["median_pitch"] - seed_pitches[len(seed_pitches) // 2]) <= 12, stats  # a sensible register
    answer = [e.pitch for e in events if e.is_on]
    inside = sum(seed_pitches[0] - 7 <= p <= seed_pitches[-1] + 7 for p in answer) / len(answer)
    assert inside >= 0.9, f"{1 - inside:.0%} of the answer lies outside the seed's register"
    assert stats["distinct_pitches"] >= 6, stats  # several pitches
    assert stats["distinct_onset_intervals"] >= 3, stats  # rhythm that moves
    assert stats["longest_silence_s"] < 2.0, stats  # no long silence
    assert stats["longest_one_pitch_run"] <= 6, stats  # no one-note loop
    assert stats["most_notes_at_once"] >= 2, stats  # a keyboard answer, not a single line


@pytest.mark.parametrize("length", BOUND_PRIME_LENGTHS)
def test_tokens_fed_in_one_call_through_bound_buffers_match_a_plain_run(shipped_model, length):
    # (A call of several tokens is not bit-equal to stepping them: int8 quantizes each call's
    # activations together. So the bound call is checked against run(), the way it replaced.)
    vocab = shipped_model.vocab
    tokens = [vocab.time_shift(7), vocab.offset("VELOCITY") + 5, vocab.note_on(60), vocab.note_off(60)][:length]
    shipped_model.reset()
    shipped_model.step(vocab.special("START"))
    before = shipped_model.snapshot()
    primed = shipped_model.prime(tokens)[-1].copy()
    expected_logits, expected_state = shipped_model.run(np.array([tokens]), before)
    assert np.allclose(primed, expected_logits[0, -1], atol=1e-6)
    for got, expected in zip(shipped_model.snapshot(), expected_state):
        assert np.allclose(got, expected, atol=1e-6)
    shipped_model.reset()
