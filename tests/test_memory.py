"""The session memory: exact Witten-Bell counts, the gate on match length, its bound, and its file."""

import numpy as np
import pytest

from improv.memory import MemoryFileError, SessionMemory

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
        damaged(path, header=np.array('{"format": "improv-session-memory-1", "vocab": "vocab-a"}'))
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
