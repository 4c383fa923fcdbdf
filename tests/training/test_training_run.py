"""training.train and training.export at toy size: configs found by name from any folder, one-line
errors, the run's ETA, a resumed run's card listing every epoch, and a card for too few pieces."""

import os
import re
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from conftest import CHORALE, DATA, EXPRESSIVE, ROOT

pytest.importorskip("torch", reason="training needs the train extra: pip install '.[train]'")
train = pytest.importorskip("training.train")
from training import data, export  # noqa: E402
from training.errors import TrainingError  # noqa: E402



def test_packaged_configs_are_found_by_name_from_any_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert train.config_path("tiny") == ROOT / "training" / "configs" / "tiny.yaml"
    assert train.TrainConfig.from_yaml(train.config_path("default")).model["hidden"] == 512
    own = tmp_path / "mine.yaml"
    own.write_text("epochs: 2\n")
    assert train.config_path(str(own)) == own and train.TrainConfig.from_yaml(own).epochs == 2
    with pytest.raises(TrainingError, match=r"packaged: default, styles, styles_answers, tiny"):
        train.config_path("tinyy")
    assert train.main(["--config", "tinyy"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no config 'tinyy'") and err.count("\n") == 1


def test_a_bad_setting_is_an_exception_not_an_exit(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochz: 3\n")
    with pytest.raises(TrainingError, match="unknown setting"):
        train.TrainConfig.from_yaml(bad)


def test_the_run_eta_counts_the_epochs_left_and_stops_at_max_minutes():
    config = train.TrainConfig(epochs=10)
    # 30 steps an epoch of 1 s each, one epoch done after 30 s: nine epochs left.
    assert train.run_eta_s(config, 30, 30, 30.0, 1.0) == pytest.approx(270)
    # max_minutes=1: epoch 2 ends at 60 s (not past it), epoch 3 at 90 s, after which the run stops.
    assert train.run_eta_s(replace(config, max_minutes=1), 30, 30, 30.0, 1.0) == pytest.approx(60)
    # Past the limit mid-epoch, the epoch under way still finishes.
    assert train.run_eta_s(replace(config, max_minutes=1), 30, 45, 75.0, 1.0) == pytest.approx(15)
    assert train.clock(615) == "10:15"


@pytest.fixture
def small_dataset(tmp_path):
    """Two real pieces cut into eight, with every split filled."""
    pieces = [chunk for path in (CHORALE, EXPRESSIVE) for chunk in np.array_split(data.parse_midi(str(path)), 4)]
    starts = np.cumsum([0] + [len(p) for p in pieces]).astype(np.int64)
    splits = ["train"] * 6 + ["validation", "test"]
    dataset = data.Dataset(np.concatenate(pieces), starts, [f"mine/{i}.mid" for i in range(8)], splits)
    path = tmp_path / "dataset.npz"
    dataset.save(path)
    return path


def test_a_resumed_run_exports_a_card_with_every_epoch_of_its_log(small_dataset, tmp_path):
    config = replace(train.TrainConfig.from_yaml(train.config_path("tiny")), data=str(small_dataset),
                     out_dir=str(tmp_path / "run"), epoch_tokens=4096, epochs=2)
    lines = []
    train.train(config, log=lines.append)
    # Resumed for a third epoch at a learning rate that wrecks the model, so the best checkpoint is an
    # earlier epoch than the last one the log shows.
    best = train.train(replace(config, epochs=3, lr=50.0, min_lr=50.0), resume=True, log=lines.append)
    logged = [int(m.group(1)) for m in map(re.compile(r"epoch (\d+)/\d+: train").match, lines) if m]
    assert logged == [1, 2, 3], lines
    assert any("resumed from" in line for line in lines)
    assert all("run ETA" in line for line in lines if line.startswith("epoch "))
    best_epoch = export.torch.load(best, weights_only=False)["state"]["epoch"]
    assert best_epoch < 3, "the test needs a best checkpoint before the last epoch"

    out = tmp_path / "model" / "mine.onnx"
    assert export.main(["--checkpoint", str(best), "--data", str(small_dataset), "--out", str(out)]) == 0
    card = out.with_suffix(".md").read_text()
    rows = re.findall(r"^\| (\d+) \| \d+ \| [\d.]+ \| \S+ \| [\d.]+ \|$", card, re.MULTILINE)
    assert [int(r) for r in rows] == logged
    assert f"The exported checkpoint is from epoch {best_epoch}." in card
    # The card's lines come from this run and these files, not from the shipped model's.
    assert train.machine_description() in card
    assert "MIDI folder mine (8 pieces)" in card and "the license of your files applies" in card
    assert "music21" not in card and "| player-like | 1 |" in card


def test_a_quick_run_from_outside_the_repository_explains_missing_held_out_pieces(tmp_path):
    out = tmp_path / "quick.onnx"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "training.pipeline", "--midi", str(DATA), "--config", "tiny", "--out", str(out),
         "--work", str(tmp_path / "work"), "--quantize", "int8"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step 2/3: training with " + str(ROOT / "training" / "configs" / "tiny.yaml") in result.stdout
    assert "warning" not in result.stderr.lower()  # the exporters' notices that do not apply are silenced
    card = (tmp_path / "quick.md").read_text()
    # tests/data holds two pieces, both in train: no validation or test piece to report.
    assert "No test pieces: the data had 2 pieces and the split" in card and "No test pieces" in result.stdout
    assert "| test set |" not in card
    assert "None" not in card and "null" not in card
    assert "no validation pieces" in result.stdout
    assert "0 duplicate pieces found" in card and "0 duplicate pieces found" in result.stdout
    assert "not evaluated: there are no test pieces" in card and (tmp_path / "quick.int8.onnx").exists()
