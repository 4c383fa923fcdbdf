"""The session memory: exact Witten-Bell counts, the gate on match length, its bound, and its file."""

import json

import numpy as np
import pytest

from improv.memory import FORMAT, MemoryFileError, SessionMemory

V = 10  # a toy vocabulary: tokens 0..9
A, B, C = 1, 2, 3


def test_prediction_blends_the_matched_orders_by_witten_bell():
    memory = SessionMemory(V, max_order=2)
    memory.learn_all([A, B, A, C, A])
    p, matched = memory.predict([C, A])
    # order 0: counts A3 B1 C1 over 5 with T=3 distinct; order 1 (A,): B1 C1, T=2; order 2 (C, A): unseen
    p0 = (np.bincount([A, B, A, C, A], minlength=V) + 3 / V) / (5 + 3)
    p1 = 2 / (2 + 2) * p0
    p1[B] += 1 / 4
    p1[C] += 1 / 4
    assert matched == 1
    np.testing.assert_allclose(p, p1)
    assert p.sum() == pytest.approx(1.0)


def test_a_repeated_phrase_is_matched_longer_and_weighs_more():
    memory = SessionMemory(V, max_order=6)
    phrase = [4, 5, 6, 7, 8]
    memory.learn_all(phrase)
    _, first = memory.predict([7, 8, 4, 5])
    memory.learn_all(phrase)
    _, again = memory.predict([7, 8, 4, 5])
    assert (first, again) == (2, 4)  # (4, 5) was heard once; (7, 8, 4, 5) only once the phrase came round
    assert memory.weight(0, 1.0) == 0.0  # before anything is learned, no match means no say
    assert memory.weight(again, 1.0) > memory.weight(first, 1.0)
    learned = memory.weights[again]
    assert memory.weight(again, 0.25) == pytest.approx(learned / 2)  # 0.5 is the learned weight
    assert memory.weight(again, 1.0) == pytest.approx(0.2 * again)  # 1 quotes the player more
    assert 0.2 * again > learned


def learned_repeats(p_model: float) -> SessionMemory:
    """A memory that heard a motif six times, each token given probability `p_model` by the LSTM."""
    memory = SessionMemory(V, max_order=6)
    for token in [4, 5, 6, 7, 8] * 6:
        memory.learn(token, p_model)
    return memory


def test_where_the_lstm_did_not_see_the_player_coming_the_memory_takes_the_lead():
    logits = np.zeros(V, np.float32)
    logits[9] = 4.0  # the LSTM would play 9
    memory = learned_repeats(p_model=0.01)
    mixed, _ = memory.mix(logits, [5, 6, 7, 8, 4, 5, 6, 7], attachment=0.5)  # the learned weights alone
    assert np.exp(mixed.astype(np.float64)).sum() == pytest.approx(1.0, abs=1e-5)
    assert int(np.argmax(mixed)) == 8  # the player always went on with 8
    assert memory.mix(logits, [4, 5, 6, 7], attachment=0.0)[0] is logits


def test_the_memory_learns_a_larger_share_where_the_lstm_did_worse():
    missed, foreseen = learned_repeats(p_model=0.01), learned_repeats(p_model=0.99)
    assert all(missed.weights > foreseen.weights)


def test_the_memory_is_bounded_and_forgets_the_least_recently_heard_first():
    memory = SessionMemory(1000, max_order=2, max_contexts=50)
    memory.learn_all(range(500))
    assert len(memory) == 50
    assert (499 - 1,) in memory.contexts and (1,) not in memory.contexts
    memory.learn_all([7, 8])  # an old context heard again is kept
    assert (7,) in memory.contexts


def test_a_saved_memory_predicts_as_the_one_it_was(tmp_path):
    memory = SessionMemory(V, max_order=3)
    memory.learn_all([1, 2, 3, 1, 2, 4, 1, 2, 3])
    path = tmp_path / "session.memory.npz"
    memory.save(path, "vocab-a")
    loaded = SessionMemory.load(path, "vocab-a", V)
    for context in ([1, 2], [2, 3], [9], [3, 1, 2]):
        np.testing.assert_allclose(loaded.predict(context)[0], memory.predict(context)[0])
    assert list(loaded.recent) == list(memory.recent) and loaded.tokens_learned == 9


def damaged(path, **changes) -> None:
    """A saved memory with some of its arrays replaced."""
    memory = SessionMemory(V, max_order=2)
    memory.learn_all([1, 2, 3, 1, 2])
    memory.save(path, "vocab-a")
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    arrays.update(changes)
    np.savez(path, **arrays)


@pytest.mark.parametrize("kind, message", [
    ("missing", "does not exist"),
    ("garbage", "is not an improv session memory"),
    ("one array", "is not an improv session memory"),
    ("foreign", "another model's vocabulary"),
    ("no order", "damaged"),
    ("token out of range", "damaged"),
])
def test_an_unreadable_foreign_or_damaged_memory_file_says_what_is_wrong(tmp_path, kind, message):
    path = tmp_path / "m.npz"
    if kind == "garbage":
        path.write_bytes(b"not a memory")
    elif kind == "one array":
        with open(path, "wb") as handle:
            np.save(handle, np.zeros(3))
    elif kind == "foreign":
        SessionMemory(V).save(path, "vocab-b")
    elif kind == "no order":
        damaged(path, header=np.array(json.dumps({"format": FORMAT, "vocab": "vocab-a"})))
    elif kind == "token out of range":
        damaged(path, table=np.array([[1, -1, V + 5, 1]], dtype=np.int32))
    with pytest.raises(MemoryFileError, match=message):
        SessionMemory.load(path, "vocab-a", V)


def test_a_mask_far_below_the_models_favourite_still_mixes_to_a_distribution():
    memory = SessionMemory(V, max_order=2)
    memory.learn_all([1, 2, 3, 1, 2])
    logits = np.full(V, -300.0, dtype=np.float32)
    logits[9] = 0.0  # the model's favourite, masked out below
    allowed = np.zeros(V, dtype=bool)
    allowed[[3, 4]] = True
    mixed, _ = memory.mix(logits, [1, 2], attachment=1.0, allowed=allowed)
    p = np.exp(mixed.astype(np.float64))
    assert np.isfinite(mixed[allowed]).all() and p[allowed].sum() == pytest.approx(1.0) and p[~allowed].sum() == 0


def test_eviction_never_keeps_a_context_whose_shorter_suffix_is_gone():
    memory = SessionMemory(V, max_order=3, max_contexts=4)
    memory.learn_all([1, 2, 3, 4, 5, 6, 7])
    for context in memory.contexts:
        assert all(context[-k:] in memory.contexts for k in range(1, len(context))), list(memory.contexts)


# -- contexts of classes ------------------------------------------------------------------------------
def played(vocab, pitches, jitter_ms=0.0, seed=0, step_s=0.2, note_s=0.17):
    """A melody as the encoder hears it, each onset and release moved by up to `jitter_ms`."""
    from improv.events import Note, encode_notes

    rng = np.random.default_rng(seed)
    notes = [Note(pitch, i * step_s + rng.uniform(-jitter_ms, jitter_ms) / 1000,
                  i * step_s + note_s + rng.uniform(-jitter_ms, jitter_ms) / 1000, 90)
             for i, pitch in enumerate(pitches)]
    return encode_notes(vocab, notes, start_token=False)


MELODY = (60, 62, 64, 65, 67, 65, 64, 62, 60, 67)


def matched_orders(memory, tokens) -> np.ndarray:
    """The longest order the memory matches before each token of `tokens` after the first few."""
    return np.array([memory.predict(tokens[: i + 1])[1] for i in range(8, len(tokens) - 1)])


def test_a_melody_played_again_with_jitter_is_matched_at_long_orders():
    from improv.events import Vocabulary
    from improv.memory import ContextClasses

    vocab = Vocabulary()
    classed, exact = [], []
    for seed in range(10):
        first, again = played(vocab, MELODY, 6, seed), played(vocab, MELODY, 6, seed + 100)
        assert first != again  # the same melody, not the same tokens
        for memory, orders in ((SessionMemory(vocab.size, classes=ContextClasses.for_vocab(vocab)), classed),
                               (SessionMemory(vocab.size), exact)):
            memory.learn_all(first)
            orders.append(matched_orders(memory, again).mean())
    # Exact contexts break at nearly every jittered time shift; classes of time carry the match on.
    assert all(c > e for c, e in zip(classed, exact)), (classed, exact)
    assert np.mean(classed) > 4.5 and np.mean(exact) < 3.5, (classed, exact)


def test_classed_contexts_still_predict_the_exact_tokens_heard():
    from improv.events import Vocabulary
    from improv.memory import ContextClasses

    vocab = Vocabulary()
    memory = SessionMemory(vocab.size, classes=ContextClasses.for_vocab(vocab))
    shift = vocab.time_shift
    memory.learn_all([vocab.note_on(60), shift(18), vocab.note_off(60), shift(3), vocab.note_on(64)])
    # 15 steps is in 18's class (140..200 ms); what came next was the exact note-off, and after it the exact shift.
    p, matched = memory.predict([vocab.note_on(60), shift(15)])
    assert matched == 2 and int(np.argmax(p)) == vocab.note_off(60)
    p, _ = memory.predict([vocab.note_on(60), shift(15), vocab.note_off(60)])
    assert int(np.argmax(p)) == shift(3) and p[shift(3)] > 10 * p[shift(2)]


def test_time_and_velocity_classes():
    from improv.events import Vocabulary
    from improv.memory import ContextClasses

    vocab = Vocabulary()
    of = ContextClasses.for_vocab(vocab).of
    shift, velocity = vocab.time_shift, vocab.velocity
    assert of[shift(1)] == of[shift(3)] != of[shift(4)]  # up to 30 ms: notes struck together
    assert of[shift(4)] == of[shift(6)] != of[shift(7)]  # the next as wide
    assert of[shift(14)] == of[shift(20)] != of[shift(21)]  # then each half as long again as the one before
    assert of[shift(69)] == of[shift(100)]
    assert of[velocity(0)] == of[velocity(7)] != of[velocity(8)]  # four classes of eight bins
    assert of[vocab.note_on(60)] == vocab.note_on(60) and of[vocab.note_off(61)] == vocab.note_off(61)


def test_a_saved_memory_keeps_its_classes_and_an_old_file_gives_one_line_and_an_empty_memory(tmp_path):
    from improv.events import Vocabulary
    from improv.memory import ContextClasses, load_or_empty

    vocab = Vocabulary()
    classes = ContextClasses.for_vocab(vocab)
    memory = SessionMemory(vocab.size, classes=classes)
    memory.learn_all(played(vocab, MELODY, 6))
    path = tmp_path / "session.memory.npz"
    memory.save(path, vocab.to_json())
    loaded = SessionMemory.load(path, vocab.to_json(), vocab.size)
    np.testing.assert_array_equal(loaded.classes.of, classes.of)
    again = played(vocab, MELODY, 6, seed=7)
    np.testing.assert_allclose(loaded.predict(again[:30])[0], memory.predict(again[:30])[0])
    # A memory saved before contexts had classes: its header names the old format.
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    header = json.loads(str(arrays["header"]))
    arrays["header"] = np.array(json.dumps({**header, "format": "improv-session-memory-1"}))
    del arrays["context_classes"]
    np.savez(path, **arrays)
    warnings = []
    empty = load_or_empty(path, vocab.to_json(), vocab.size, 1000, warnings.append, classes)
    assert empty.tokens_learned == 0 and empty.classes is classes
    assert len(warnings) == 1 and "another version of improv" in warnings[0] and "empty session memory" in warnings[0]
