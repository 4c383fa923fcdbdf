import numpy as np

from improv.markov import MarkovModel


def test_probabilities_are_a_distribution_for_seen_and_unseen_contexts():
    rng = np.random.default_rng(0)
    sequences = [rng.integers(0, 12, 400) for _ in range(4)]
    model = MarkovModel.train(sequences, 12, max_order=4, min_count=1)
    for context in ([1, 2, 3], [11, 11, 11, 11, 11], [5]):
        total = sum(model.probabilities(np.array(context + [w]))[-1] for w in range(12))
        assert abs(total - 1.0) < 1e-9


def test_a_repeated_pattern_is_learned_and_random_input_is_not():
    pattern = np.tile([1, 2, 3, 4, 5], 100)
    noise = np.random.default_rng(1).integers(0, 20, 500)
    model = MarkovModel.train([pattern, noise], 20, max_order=3)
    bits_pattern, n = model.bits(np.tile([1, 2, 3, 4, 5], 20))
    bits_noise, m = model.bits(np.random.default_rng(2).integers(0, 20, 100))
    assert bits_pattern / n < 0.5
    assert bits_noise / m > 3.5


def test_pruning_keeps_the_file_small_and_save_load_round_trips(tmp_path):
    rng = np.random.default_rng(3)
    sequences = [rng.integers(0, 50, 2000)]
    full = MarkovModel.train(sequences, 50, max_order=4, min_count=1)
    pruned = MarkovModel.train(sequences, 50, max_order=4, min_count=2)
    assert len(pruned.tables[3].pair_keys) < len(full.tables[3].pair_keys)
    path = tmp_path / "m.markov.npz"
    pruned.save(path)
    loaded = MarkovModel.load(path)
    probe = rng.integers(0, 50, 300)
    assert np.allclose(loaded.probabilities(probe), pruned.probabilities(probe))
