import numpy as np

from improv.events import Vocabulary
from improv.sampling import MaskBuilder, sample

VOCAB = Vocabulary()


def test_low_temperature_approaches_argmax_and_top_p_cuts_the_tail():
    rng = np.random.default_rng(0)
    logits = np.zeros(10, np.float32)
    logits[3], logits[7] = 5.0, 4.0
    assert {sample(logits, 0.01, 1.0, rng) for _ in range(50)} == {3}
    # p(3) ~ 0.70, p(7) ~ 0.26: top_p 0.5 keeps only 3; 0.9 keeps 3 and 7 but none of the rest.
    assert {sample(logits, 1.0, 0.5, rng) for _ in range(200)} == {3}
    assert {sample(logits, 1.0, 0.9, rng) for _ in range(500)} == {3, 7}
    assert len({sample(logits, 1.0, 1.0, rng) for _ in range(2000)}) > 2


def test_sampling_follows_the_distribution():
    rng = np.random.default_rng(1)
    logits = np.log(np.array([0.5, 0.3, 0.2], np.float32))
    counts = np.bincount([sample(logits, 1.0, 1.0, rng) for _ in range(20000)], minlength=3) / 20000
    assert np.allclose(counts, [0.5, 0.3, 0.2], atol=0.02)


def test_mask_never_lets_a_disallowed_token_through():
    rng = np.random.default_rng(2)
    masks = MaskBuilder(VOCAB)
    masks.set_range(48, 72)
    logits = rng.normal(size=VOCAB.size).astype(np.float32)
    for _ in range(300):
        allowed = masks.build({50, 60}, max_polyphony=8)
        token = sample(logits, 1.5, 1.0, rng, allowed)
        group, value = VOCAB.decode_token(token)
        assert group not in VOCAB.specials
        if group == "NOTE_ON":
            assert 48 <= value <= 72
        if group == "NOTE_OFF":
            assert value in {50, 60}


def test_polyphony_limit_and_answer_onset_masks():
    masks = MaskBuilder(VOCAB)
    full = masks.build({60, 64, 67}, max_polyphony=3)
    assert not full[VOCAB.note_on(72)] and full[VOCAB.note_off(64)] and full[VOCAB.time_shift(5)]
    onset = masks.build(set(), max_polyphony=8, onset_now=True)
    allowed_groups = {VOCAB.decode_token(t)[0] for t in np.flatnonzero(onset)}
    assert allowed_groups == {"NOTE_ON", "VELOCITY"}
    note_only = masks.build(set(), max_polyphony=8, onset_now=True, velocity_first=False)
    assert {VOCAB.decode_token(t)[0] for t in np.flatnonzero(note_only)} == {"NOTE_ON"}
    masks.set_range(48, 72)  # onset masks are kept between calls: a new range must still apply
    ranged = masks.build(set(), max_polyphony=8, onset_now=True, velocity_first=False)
    assert not ranged[VOCAB.note_on(40)] and ranged[VOCAB.note_on(60)]
    full_onset = masks.build({50, 60}, max_polyphony=2, onset_now=True, velocity_first=False)
    assert not full_onset[VOCAB.note_on(60)]
