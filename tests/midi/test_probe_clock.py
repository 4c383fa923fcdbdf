"""The probe's MIDI clock schedule (improv.tools.probe.pulse_times): the due times the JACK tests
send, and check improv against."""

import random
import statistics
from itertools import pairwise

import pytest

from improv.tools.probe import pulse_times, tempo_function


def test_a_steady_tempo_is_24_pulses_a_quarter_note():
    dues = pulse_times(120, 2.0, start_s=10.0)
    assert len(dues) == 96 and dues[0] == 10.0
    assert all(b - a == pytest.approx(0.5 / 24) for a, b in pairwise(dues))


def test_a_tempo_changes_from_120_to_140_over_a_bar():
    tempo = [(0.0, 120.0), (2.0, 120.0), (4.0, 140.0)]
    assert [tempo_function(tempo)(t) for t in (-1.0, 1.0, 3.0, 4.0, 9.0)] == [120.0, 120.0, 130.0, 140.0, 140.0]
    dues = pulse_times(tempo, 6.0, start_s=0.0)
    first_bar = [b - a for a, b in pairwise(dues) if b <= 2.0]
    last_bar = [b - a for a, b in pairwise(dues) if a >= 4.0]
    assert statistics.mean(first_bar) == pytest.approx(60 / 120 / 24)
    assert statistics.mean(last_bar) == pytest.approx(60 / 140 / 24)
    assert pulse_times(lambda t_s: 120.0 if t_s < 2.0 else 140.0, 6.0, 0.0)[:48] == dues[:48]


@pytest.mark.parametrize("jitter", ["uniform", "gauss"])
def test_jitter_moves_each_pulse_on_its_own_and_never_before_the_one_before(jitter):
    steady = pulse_times(120, 20.0, start_s=0.0)
    moved = pulse_times(120, 20.0, start_s=0.0, jitter_ms=2.0, rng=random.Random(3), jitter=jitter)
    offsets_ms = [1000 * (m - s) for m, s in zip(moved, steady)]
    assert moved == sorted(moved)
    assert abs(statistics.mean(offsets_ms)) < 0.3  # around the grid: jitter does not accumulate
    if jitter == "uniform":
        assert max(abs(o) for o in offsets_ms) <= 2.0
        assert statistics.pstdev(offsets_ms) == pytest.approx(2.0 / 3 ** 0.5, rel=0.15)
    else:
        assert statistics.pstdev(offsets_ms) == pytest.approx(2.0, rel=0.15)
    with pytest.raises(ValueError, match="uniform"):
        pulse_times(120, 1.0, 0.0, jitter_ms=1.0, jitter="triangle")
