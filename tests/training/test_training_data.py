"""training.data on real MIDI files: folders, the MAESTRO layout, failures counted, splits by content, augmentation."""

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


def test_the_split_by_piece_is_pinned_and_holds_out_about_a_tenth():
    ids = [f"music21/bach/bwv{i}.mxl" for i in range(2000)]
    splits = [data.split_of(i) for i in ids]
    # Pinned: the shipped model's held-out pieces were chosen by this hash; a change would leak them.
    assert [data.split_of(f"music21/bach/bwv{i}.mxl") for i in (0, 4, 18, 24)] == ["train", "validation", "test",
                                                                                  "test"]
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


def test_copies_of_a_piece_under_other_names_share_a_split_and_are_counted(tmp_path):
    root = tmp_path / "mine"
    (root / "sub").mkdir(parents=True)
    shutil.copy(CHORALE, root / "a.mid")
    shutil.copy(EXPRESSIVE, root / "b.mid")
    # A name whose path hash puts the copy in another split than the original: the old split by path
    # would have put the two copies apart.
    name = next(f"sub/copy{i}.mid" for i in range(1000)
                if data.split_of(f"mine/sub/copy{i}.mid") != data.split_of("mine/a.mid"))
    shutil.copy(CHORALE, root / name)
    dataset = data.build_dataset(data.midi_folder_paths(str(root)), str(tmp_path / "cache"), workers=1,
                                 progress=lambda _: None)
    split = dict(zip(dataset.piece_ids, dataset.splits))
    assert split[f"mine/{name}"] == split["mine/a.mid"] == data.split_of("mine/a.mid")  # the first copy's
    summary = dataset.summary()
    assert summary["duplicates"] == 1 and "duplicates_in_another_split" not in summary
    assert data.duplicates_note(summary).startswith("1 duplicate piece found")
    # A dataset split by path before (copies apart) says so rather than claiming they share a split.
    dataset.splits[dataset.piece_ids.index(f"mine/{name}")] = data.split_of(f"mine/{name}")
    assert dataset.summary()["duplicates_in_another_split"] == 1


def test_a_corpus_without_copies_splits_exactly_as_the_path_hash():
    ids = [f"music21/bach/bwv{i}.mxl" for i in range(2000)]
    keys = [f"content {i}" for i in range(2000)]
    assert data.split_by_content(ids, keys, {}) == [data.split_of(i) for i in ids]
    # Copies: every member gets the split of the first by piece id, whatever order they come in.
    grouped = data.split_by_content(ids[::-1], ["same"] * 2000, {})
    assert set(grouped) == {data.split_of(min(ids))}


def test_a_maestro_split_names_the_split_of_all_copies():
    ids = ["maestro/2004/b.midi", "maestro/2004/a.midi", "other/c.mid"]
    splits = data.split_by_content(ids, ["k", "k", "k"], {"maestro/2004/b.midi": "test"})
    assert splits == ["test", "test", "test"]


def test_library_errors_are_exceptions_and_commands_say_them_in_one_line(tmp_path, capsys):
    from training.errors import TrainingError

    with pytest.raises(TrainingError, match="not a folder"):
        data.midi_folder_paths(str(tmp_path / "missing"))
    dataset = data.Dataset(np.zeros((4, 4), np.float32), np.array([0, 4]), ["x/a.mid"], ["test"])
    with pytest.raises(TrainingError, match="the train split has no pieces"):  # SystemExit would escape this
        data.WindowSampler(dataset, "train", Vocabulary(), 16, None, seed=0)
    assert data.main(["--midi", str(tmp_path / "missing"), "--cache", str(tmp_path / "cache")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a folder" in err and err.count("\n") == 1


def test_the_notes_are_a_file_of_their_own_that_loading_memory_maps(midi_folder, tmp_path):
    dataset = data.build_dataset(data.midi_folder_paths(str(midi_folder)), str(tmp_path / "cache"), workers=1,
                                 progress=lambda _: None)
    path = tmp_path / "out" / "dataset.npz"
    dataset.save(path)
    assert (tmp_path / "out" / "dataset.notes.npy").is_file()
    with np.load(path) as saved:
        assert "notes" not in saved.files  # the .npz keeps the small arrays only
    loaded = data.Dataset.load(path)
    assert isinstance(loaded.notes.base, np.memmap) and not loaded.notes.flags.writeable  # mapped, not read
    assert np.array_equal(loaded.notes, dataset.notes) and loaded.summary() == dataset.summary()
    assert loaded.keys == dataset.content_keys()  # saved, not hashed again at each load
    # A dataset saved before (the notes inside the .npz) still loads.
    old = tmp_path / "old.npz"
    np.savez(old, notes=dataset.notes, starts=dataset.starts, piece_ids=np.array(dataset.piece_ids),
             splits=np.array(dataset.splits), failures="{}")
    again = data.Dataset.load(old)
    assert np.array_equal(again.notes, dataset.notes) and again.piece_ids == dataset.piece_ids
    assert again.summary()["pieces"] == dataset.summary()["pieces"]
    # A notes file that is not the one saved with it is named, not misread.
    np.save(tmp_path / "out" / "dataset.notes.npy", dataset.notes[:-1])
    from training.errors import TrainingError
    with pytest.raises(TrainingError, match="build the dataset again"):
        data.Dataset.load(path)


def test_a_second_run_reads_the_cache_and_parses_only_changed_files(midi_folder, tmp_path):
    jobs = data.midi_folder_paths(str(midi_folder))
    cache = tmp_path / "cache"
    lines = []
    data.build_dataset(jobs, str(cache), workers=1, progress=lines.append)
    assert lines[-1].startswith("parsed 3/3 files (0 from the cache), 1 skipped") and "files/s" in lines[-1]
    assert "ETA 00:00" in lines[-1]
    entries = sorted(p.name for p in (cache / "pieces").iterdir())
    assert len(entries) == 3 and sum(e.endswith(".failed") for e in entries) == 1  # the failure is kept too
    lines.clear()
    again = data.build_dataset(jobs, str(cache), workers=1, progress=lines.append)
    assert lines[-1].startswith("parsed 3/3 files (3 from the cache), 1 skipped")
    assert "not a readable MIDI file" in next(iter(again.failures.values()))
    # An edited file is parsed again: its size and time are in its cache key.
    shutil.copy(EXPRESSIVE, midi_folder / "2004" / "a.mid")
    lines.clear()
    edited = data.build_dataset(jobs, str(cache), workers=1, progress=lines.append)
    assert lines[-1].startswith("parsed 3/3 files (2 from the cache)")
    assert np.array_equal(edited.piece_notes(0), edited.piece_notes(1))  # a.mid now plays b's notes


def test_many_failures_are_counted_and_the_first_few_shown():
    failures = {f"x/{i:02d}.mid": f"reason {i}" for i in range(12)}
    lines = data.failures_report(failures, shown=5)
    assert lines[:5] == [f"skipped x/{i:02d}.mid: reason {i}" for i in range(5)]
    assert lines[5].startswith("... and 7 more skipped files (all 12 are listed") and len(lines) == 6
    assert data.failures_report({}) == []
