"""training.data on real MIDI files: folders, the MAESTRO layout, failures counted, augmentation."""

import shutil

import numpy as np
import pytest

from improv.events import Vocabulary

from conftest import CHORALE, EXPRESSIVE

data = pytest.importorskip("training.data")


@pytest.fixture
def midi_folder(tmp_path):
    root = tmp_path / "maestro"
    (root / "2004").mkdir(parents=True)
    shutil.copy(CHORALE, root / "2004" / "a.mid")
    shutil.copy(EXPRESSIVE, root / "2004" / "b.MIDI")
    (root / "2004" / "broken.mid").write_bytes(b"MThd\x00\x00")
    (root / "maestro-v3.0.0.csv").write_text(
        "canonical_composer,canonical_title,split,year,midi_filename,audio_filename,duration\n"
        "Bach,Chorale,test,2004,2004/a.mid,x.wav,1\n"
        "Joplin,Rag,train,2004,2004/b.MIDI,y.wav,1\n"
        "Nobody,Broken,validation,2004,2004/broken.mid,z.wav,1\n")
    return root


def test_a_midi_folder_is_read_recursively_and_failures_are_counted_not_fatal(midi_folder, tmp_path):
    jobs = data.midi_folder_paths(str(midi_folder))
    assert sorted(j[0].rsplit("/", 1)[-1] for j in jobs) == ["a.mid", "b.MIDI", "broken.mid"]
    dataset = data.build_dataset(jobs, str(tmp_path / "cache"), workers=1, progress=lambda _: None)
    assert len(dataset.piece_ids) == 2
    assert list(dataset.failures) == [str(midi_folder / "2004" / "broken.mid")]
    assert "not a readable MIDI file" in next(iter(dataset.failures.values()))
    path = tmp_path / "dataset.npz"
    dataset.save(path)
    again = data.Dataset.load(path)
    assert again.piece_ids == dataset.piece_ids and np.array_equal(again.notes, dataset.notes)


def test_the_maestro_layout_uses_its_csv_split(midi_folder, tmp_path):
    jobs, splits = data.maestro_paths(str(midi_folder))
    dataset = data.build_dataset(jobs, str(tmp_path / "cache"), splits, workers=1, progress=lambda _: None)
    assert dict(zip(dataset.piece_ids, dataset.splits)) == {"maestro/2004/a.mid": "test", "maestro/2004/b.MIDI": "train"}


def test_the_split_by_piece_is_deterministic_and_holds_out_about_a_tenth():
    ids = [f"music21/bach/bwv{i}.mxl" for i in range(2000)]
    splits = [data.split_of(i) for i in ids]
    assert splits == [data.split_of(i) for i in ids]
    assert 0.07 < (splits.count("validation") + splits.count("test")) / len(ids) < 0.13


def test_augmentation_stays_playable_and_windows_begin_like_a_live_context(midi_folder, tmp_path):
    jobs = data.midi_folder_paths(str(midi_folder))[:2]
    dataset = data.build_dataset(jobs, str(tmp_path / "cache"), workers=1, progress=lambda _: None)
    rng = np.random.default_rng(0)
    notes = dataset.piece_notes(0)
    for _ in range(50):
        out = data.Augment().apply(notes, rng)
        assert ((out[:, 0] >= 0) & (out[:, 0] < 128)).all() and ((out[:, 3] >= 1) & (out[:, 3] <= 127)).all()
        assert (np.diff(out[:, 1]) >= 0).all() and (out[:, 2] >= out[:, 1]).all()
    dataset.splits = ["train"] * len(dataset.splits)
    vocab = Vocabulary()
    sampler = data.WindowSampler(dataset, "train", vocab, 64, data.Augment(), seed=1)
    batch = sampler.batch(4)
    assert batch.shape == (4, 65) and (batch[:, 0] == vocab.special("START")).all()
