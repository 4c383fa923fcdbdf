"""The whole training pipeline at toy size: corpus subset and a MIDI folder -> model -> improv generate."""

import json
import subprocess
import sys
import time

import mido
import pytest

from conftest import CHORALE, DATA, ROOT

pytest.importorskip("torch", reason="training needs the train extra: pip install '.[train]'")
pytest.importorskip("music21", reason="training needs the train extra: pip install '.[train]'")


@pytest.mark.slow
def test_tiny_model_trains_exports_and_continues_a_real_piece(tmp_path):
    out = tmp_path / "tiny.onnx"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "training.pipeline", "--music21", "bach", "--limit", "40", "--midi", str(DATA),
         "--config", str(ROOT / "training/configs/tiny.yaml"), "--work", str(tmp_path / "work"), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    print(f"pipeline took {time.monotonic() - started:.1f} s")  # reported, not asserted: machines are shared
    card = (tmp_path / "tiny.md").read_text()
    epochs = [line for line in card.splitlines() if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    assert len(epochs) == 3, card  # the tiny config trains 3 epochs: the card lists each
    assert "music21" in card and "non-commercial" in card  # a music21 source brings its license note
    assert "the license of your files applies" in card  # and a folder of the user's files its own
    assert (tmp_path / "tiny.markov.npz").stat().st_size > 0

    continuation = tmp_path / "continued.mid"
    generated = subprocess.run(
        [sys.executable, "-m", "improv.cli", "generate", "--seed", str(CHORALE), "--out", str(continuation),
         "--model", str(out), "--seconds", "6", "--random-seed", "0"], cwd=ROOT, capture_output=True, text=True)
    assert generated.returncode == 0, generated.stderr
    improv_track = mido.MidiFile(continuation).tracks[1]
    assert sum(1 for m in improv_track if m.type == "note_on" and m.velocity > 0) > 0

    evaluated = subprocess.run([sys.executable, "-m", "improv.cli", "eval", str(DATA), "--model", str(out), "--json"],
                               cwd=ROOT, capture_output=True, text=True)
    assert json.loads(evaluated.stdout)["markov_bits_per_token"] > 0
