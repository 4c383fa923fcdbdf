"""Corpora to cached note arrays, a deterministic split by piece (copies share one), and augmented token windows.

Sources: music21's bundled corpus (collections by composer name), any folder of MIDI files, and a
MAESTRO-layout folder (its CSV's split column). Each piece is parsed once and cached as a note array
(pitch, onset_s, offset_s, velocity) under the cache folder; a file that fails is skipped and counted
with its reason. Tokens are made at training time from the notes, after augmentation, through the
same Encoder the daemon uses.

    python -m training.data --music21 bach palestrina --cache .cache/data   # parse and cache
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import multiprocessing
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from improv.events import Note, Vocabulary, encode_notes
from improv.errors import MidiFileError
from improv.midi.files import MIDI_SUFFIXES
from training.errors import TrainingError, reports_errors

SPLITS = ("train", "validation", "test")
HELD_OUT_PERCENT = 5  # each of validation and test, by piece
SECONDS_PER_QUARTER = 0.5  # scores carry beats, not seconds: 120 bpm before tempo augmentation
SCORE_VELOCITY = 90  # scores have no velocities; augmentation varies them
NOTE_COLUMNS = 4  # pitch, onset_s, offset_s, velocity
EVAL_AUGMENT_SEED = 20261122  # held-out sets are augmented the same way every run


def split_of(piece_id: str) -> str:
    """Deterministic split by piece path: the same path lands in the same split on every machine."""
    bucket = int(hashlib.sha1(piece_id.encode()).hexdigest()[:8], 16) % 100
    if bucket < HELD_OUT_PERCENT:
        return "validation"
    if bucket < 2 * HELD_OUT_PERCENT:
        return "test"
    return "train"


def content_key(notes: np.ndarray) -> str:
    """A piece's identity by what it plays: copies of one file under other names get the same key."""
    return hashlib.sha1(np.ascontiguousarray(notes, dtype=np.float32).tobytes()).hexdigest()


def split_by_content(piece_ids: list[str], keys: list[str], override: dict[str, str]) -> list[str]:
    """One split per group of pieces with the same notes, so no piece is in two splits.

    A group takes the split a MAESTRO CSV names for one of its members, else the split that the
    path hash gives its first member (by piece id): a corpus without copies splits exactly as the
    path hash alone splits it, so held-out sets stay the same as before splits went by content.
    """
    members: dict[str, list[str]] = {}
    for piece_id, key in zip(piece_ids, keys):
        members.setdefault(key, []).append(piece_id)
    group_split = {}
    for key, ids in members.items():
        ids = sorted(ids)
        named = [override[i] for i in ids if i in override]
        group_split[key] = named[0] if named else split_of(ids[0])
    return [group_split[key] for key in keys]


# -- parsing, one piece at a time (worker processes) ------------------------------------------
def parse_score(path: str) -> np.ndarray:
    """A music21 score (any format its corpus holds) as a note array in seconds."""
    from music21 import converter, stream  # training extra only

    parsed = converter.parse(path)
    scores = list(parsed.scores) if isinstance(parsed, stream.Opus) else [parsed]
    rows, start_s = [], 0.0
    for score in scores:  # an Opus (many tunes in one file) plays its tunes one after another
        end_s = start_s
        for part in (score.parts or [score]):
            for element in part.stripTies().flatten().notes:
                length = float(element.quarterLength)
                if length <= 0:  # grace notes have no duration in the score
                    continue
                onset = start_s + float(element.offset) * SECONDS_PER_QUARTER
                offset = onset + length * SECONDS_PER_QUARTER
                for pitch in element.pitches:
                    rows.append((pitch.midi, onset, offset, SCORE_VELOCITY))
                end_s = max(end_s, offset)
        start_s = end_s + 2.0
    return _note_array(rows)


def parse_midi(path: str) -> np.ndarray:
    """A MIDI file as the model hears it (pedal applied, channels merged, drums dropped)."""
    from improv.midi.files import read_notes

    notes = read_notes(Vocabulary(), path)
    return _note_array([(n.pitch, n.onset_s, n.offset_s, n.velocity) for n in notes])


def _note_array(rows) -> np.ndarray:
    notes = np.array(rows, dtype=np.float32).reshape(-1, NOTE_COLUMNS)
    valid = (notes[:, 0] >= 0) & (notes[:, 0] < 128)
    notes = notes[valid]
    return notes[np.lexsort((notes[:, 0], notes[:, 1]))]


def _parse_cached(job: tuple[str, str, str]) -> tuple[str, str, np.ndarray | None, str]:
    """Worker: (kind, path, cache_dir) -> (path, piece_id, notes or None, reason)."""
    kind, path, cache_dir = job
    cache_file = Path(cache_dir) / "pieces" / (hashlib.sha1(f"{kind}:{path}".encode()).hexdigest() + ".npy")
    if cache_file.exists():
        return path, kind, np.load(cache_file), ""
    try:
        notes = parse_score(path) if kind == "music21" else parse_midi(path)
    except MidiFileError as err:
        return path, kind, None, str(err)
    except Exception as err:  # a parser's failure on one file never stops the run
        return path, kind, None, f"{type(err).__name__}: {err}"
    if len(notes) == 0:
        return path, kind, None, "no pitched notes"
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(".tmp.npy")
    np.save(tmp, notes)
    tmp.replace(cache_file)
    return path, kind, notes, ""


# -- sources ------------------------------------------------------------------------------------
def music21_paths(collections: list[str]) -> list[tuple[str, str, str]]:
    """(piece_id, kind, path) for each file of the named music21 composers/collections."""
    from music21 import corpus

    jobs = []
    for name in collections:
        paths = corpus.getComposer(name) or corpus.getComposer(name.lower())
        if not paths:
            raise TrainingError(f"music21 has no collection named {name!r}; try bach, palestrina, beethoven, mozart, haydn")
        for path in sorted(str(p) for p in paths):
            if path.endswith(".rntxt"):  # roman-numeral analyses: no notes to hear
                continue
            rel = path.split("corpus/", 1)[-1]
            jobs.append((f"music21/{rel}", "music21", path))
    return jobs


def midi_folder_paths(folder: str) -> list[tuple[str, str, str]]:
    root = Path(folder)
    if not root.is_dir():
        raise TrainingError(f"{folder} is not a folder; give a folder that holds .mid or .midi files")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES and p.is_file())
    return [(f"{root.name}/{p.relative_to(root)}", "midi", str(p)) for p in files]


def maestro_paths(folder: str) -> tuple[list[tuple[str, str, str]], dict[str, str]]:
    """MAESTRO layout: a maestro-v*.csv whose split column names train/validation/test."""
    root = Path(folder)
    csvs = sorted(root.glob("maestro-v*.csv")) or sorted(root.glob("*.csv"))
    if not csvs:
        raise TrainingError(f"{folder} has no maestro-v*.csv; give the folder MAESTRO unpacks to")
    jobs, splits = [], {}
    with open(csvs[-1], newline="") as handle:
        for row in csv.DictReader(handle):
            piece_id = f"maestro/{row['midi_filename']}"
            jobs.append((piece_id, "midi", str(root / row["midi_filename"])))
            splits[piece_id] = row["split"] if row["split"] in SPLITS else "train"
    return jobs, splits


# -- the dataset: all pieces' notes in one array ----------------------------------------------------
@dataclass
class Dataset:
    notes: np.ndarray  # (N, 4) float32: pitch, onset_s, offset_s, velocity
    starts: np.ndarray  # (P + 1,) int64: piece p is notes[starts[p]:starts[p + 1]]
    piece_ids: list[str]
    splits: list[str]
    failures: dict[str, str] = field(default_factory=dict)

    def pieces(self, split: str) -> list[int]:
        return [i for i, s in enumerate(self.splits) if s == split]

    def piece_notes(self, index: int) -> np.ndarray:
        return self.notes[self.starts[index] : self.starts[index + 1]]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, notes=self.notes, starts=self.starts, piece_ids=np.array(self.piece_ids),
                 splits=np.array(self.splits), failures=json.dumps(self.failures))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "Dataset":
        with np.load(path) as data:
            return cls(data["notes"], data["starts"], [str(p) for p in data["piece_ids"]], [str(s) for s in data["splits"]],
                       json.loads(str(data["failures"])))

    def content_keys(self) -> list[str]:
        return [content_key(self.piece_notes(i)) for i in range(len(self.piece_ids))]

    def summary(self) -> dict:
        counts = Counter(self.splits)
        notes = {s: int(sum(self.starts[i + 1] - self.starts[i] for i in self.pieces(s))) for s in SPLITS}
        # Copies are counted from the notes themselves, so a dataset saved before splits went by
        # content reports its copies too, and whether any of them sit in another split than the first.
        first_split, duplicates, split_apart = {}, 0, 0
        for key, split in zip(self.content_keys(), self.splits):
            if key in first_split:
                duplicates += 1
                split_apart += split != first_split[key]
            else:
                first_split[key] = split
        summary = {"pieces": dict(counts), "notes": notes, "failed_files": len(self.failures), "duplicates": duplicates}
        if split_apart:
            summary["duplicates_in_another_split"] = split_apart
        return summary


def build_dataset(jobs: list[tuple[str, str, str]], cache_dir: str, split_override: dict[str, str] | None = None,
                  workers: int = 2, progress=print) -> Dataset:
    split_override = split_override or {}
    ids_by_path = {path: piece_id for piece_id, _, path in jobs}
    work = [(kind, path, cache_dir) for _, kind, path in jobs]
    arrays, piece_ids, failures = [], [], {}
    started = time.monotonic()
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for done, (path, _, notes, reason) in enumerate(pool.imap(_parse_cached, work, chunksize=4), 1):
            if notes is None:
                failures[path] = reason
            else:
                arrays.append(notes)
                piece_ids.append(ids_by_path[path])
            if done % 50 == 0 or done == len(work):
                progress(f"parsed {done}/{len(work)} files, {len(failures)} skipped, {time.monotonic() - started:.0f} s")
    starts = np.cumsum([0] + [len(a) for a in arrays]).astype(np.int64)
    notes = np.concatenate(arrays) if arrays else np.zeros((0, NOTE_COLUMNS), np.float32)
    splits = split_by_content(piece_ids, [content_key(a) for a in arrays], split_override)
    return Dataset(notes, starts, piece_ids, splits, failures)


def duplicates_note(summary: dict) -> str:
    """The summary's copies in a sentence, for the log and the model card."""
    count = summary.get("duplicates", 0)
    text = f"{count} duplicate piece{'s' * (count != 1)} found (the same notes as an earlier piece)"
    apart = summary.get("duplicates_in_another_split", 0)
    if apart:
        return (text + f"; {apart} of them in another split than their first copy (the dataset was built "
                       "before splits went by content: build it again)")
    return text + "; copies share a split"


# -- augmentation and training windows ------------------------------------------------------------
@dataclass
class Augment:
    """Turns scores into something closer to a player: keys, tempi, dynamics, timing."""

    transpose: int = 5  # semitones each way
    tempo_stretch: tuple[float, float] = (0.7, 1.4)  # factor on durations
    tempo_drift: float = 0.08  # relative tempo change over a window (rubato)
    timing_jitter_ms: float = 15.0  # per-onset standard deviation
    velocity_base: tuple[int, int] = (40, 110)  # a window's mean velocity
    velocity_swell: float = 18.0  # a slow phrase-level curve on top
    velocity_jitter: float = 8.0  # per-note standard deviation
    as_written: float = 0.2  # fraction of windows kept on the grid with their own velocities (DAW-like input)

    def apply(self, notes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        notes = notes.copy()
        pitch, onset, offset, velocity = notes[:, 0], notes[:, 1], notes[:, 2], notes[:, 3]
        if self.transpose:
            shift = rng.integers(-self.transpose, self.transpose + 1)
            pitch += shift
        t0 = onset[0]
        onset -= t0
        offset -= t0
        span = max(float(offset.max()), 1e-3)
        stretch = np.exp(rng.uniform(*np.log(self.tempo_stretch)))
        drift = rng.uniform(-self.tempo_drift, self.tempo_drift)
        # Tempo as a smooth ramp: time t maps to stretch * t * (1 + drift * t / span / 2).
        warp = lambda t: stretch * t * (1 + drift * t / span / 2)  # noqa: E731
        length = offset - onset
        if rng.random() < self.as_written:
            onset[:], offset[:] = stretch * onset, stretch * offset
            keep = (pitch >= 0) & (pitch < 128)
            return notes[keep]
        onset[:] = warp(onset) + rng.normal(0, self.timing_jitter_ms / 1000, len(onset))
        onset[:] = np.maximum(onset, 0)
        offset[:] = onset + np.maximum(length * stretch * rng.uniform(0.85, 1.05, len(onset)), 0.02)
        if self.velocity_base:
            phase = rng.uniform(0, 2 * np.pi)
            period = rng.uniform(4, 16)
            curve = rng.uniform(*self.velocity_base) + self.velocity_swell * np.sin(2 * np.pi * onset / period + phase)
            velocity[:] = curve + rng.normal(0, self.velocity_jitter, len(onset))
            velocity[:] = np.clip(np.round(velocity), 1, 127)
        keep = (pitch >= 0) & (pitch < 128)
        notes = notes[keep]
        return notes[np.lexsort((notes[:, 0], notes[:, 1]))]


def to_note_list(notes: np.ndarray) -> list[Note]:
    return [Note(int(p), float(on), float(off), int(v)) for p, on, off, v in notes]


class WindowSampler:
    """Random windows of `length + 1` tokens from one split, augmented, as int64 arrays.

    A window starts at a random note of a piece chosen in proportion to its length; it begins with
    START, as a live context does.
    """

    def __init__(self, dataset: Dataset, split: str, vocab: Vocabulary, length: int,
                 augment: Augment | None, seed: int):
        self.dataset, self.vocab, self.length, self.augment = dataset, vocab, length, augment
        self.pieces = dataset.pieces(split)
        if not self.pieces:
            raise TrainingError(f"the {split} split has no pieces (the data has {len(dataset.piece_ids)} pieces: "
                                f"{dict(Counter(dataset.splits))}); add more files")
        sizes = np.array([dataset.starts[i + 1] - dataset.starts[i] for i in self.pieces], dtype=np.float64)
        self.weights = sizes / sizes.sum()
        self.rng = np.random.default_rng(seed)
        self.notes_per_window = max(16, length // 2)  # about 2-4 tokens a note; extended if short

    def window(self) -> np.ndarray:
        piece = self.pieces[self.rng.choice(len(self.pieces), p=self.weights)]
        notes = self.dataset.piece_notes(piece)
        start = int(self.rng.integers(0, max(1, len(notes) - 8)))
        take = self.notes_per_window
        while True:
            chunk = notes[start : start + take]
            if self.augment is not None:
                chunk = self.augment.apply(chunk, self.rng)
            tokens = encode_notes(self.vocab, to_note_list(chunk))
            if len(tokens) >= self.length + 1 or start + take >= len(notes):
                break
            take *= 2
        out = np.full(self.length + 1, self.vocab.special("PAD"), dtype=np.int64)
        tokens = tokens[: self.length + 1]
        out[: len(tokens)] = tokens
        return out

    def batch(self, size: int) -> np.ndarray:
        return np.stack([self.window() for _ in range(size)])


def held_out_tokens(dataset: Dataset, split: str, vocab: Vocabulary) -> list[np.ndarray]:
    """Each held-out piece as one token array, unaugmented: the pieces' own notes."""
    return [np.array(encode_notes(vocab, to_note_list(dataset.piece_notes(i))), dtype=np.int64)
            for i in dataset.pieces(split)]


def augmented_tokens(dataset: Dataset, split: str, vocab: Vocabulary, copies: int, seed: int) -> list[np.ndarray]:
    """Each piece of a split, augmented as in training (keys, tempo, dynamics, timing)."""
    rng, augment, out = np.random.default_rng(seed), Augment(), []
    for _ in range(copies):
        for index in dataset.pieces(split):
            notes = augment.apply(dataset.piece_notes(index), rng)
            out.append(np.array(encode_notes(vocab, to_note_list(notes)), dtype=np.int64))
    return out


@reports_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--music21", nargs="*", default=[], metavar="NAME", help="music21 corpus collections")
    parser.add_argument("--midi", nargs="*", default=[], metavar="DIR", help="folders of .mid/.midi files")
    parser.add_argument("--maestro", metavar="DIR", help="a MAESTRO-layout folder (uses its CSV split)")
    parser.add_argument("--cache", default=".cache/data", help="cache folder (git-ignored)")
    parser.add_argument("--out", default=None, help="dataset file (default CACHE/dataset.npz)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    jobs, overrides = music21_paths(args.music21) if args.music21 else [], {}
    for folder in args.midi:
        jobs += midi_folder_paths(folder)
    if args.maestro:
        maestro_jobs, overrides = maestro_paths(args.maestro)
        jobs += maestro_jobs
    if not jobs:
        parser.error("no files: name --music21 collections, --midi folders or --maestro")
    dataset = build_dataset(jobs, args.cache, overrides, args.workers)
    out = Path(args.out or Path(args.cache) / "dataset.npz")
    dataset.save(out)
    for path, reason in sorted(dataset.failures.items()):
        print(f"skipped {path}: {reason}", file=sys.stderr)
    summary = dataset.summary()
    print(duplicates_note(summary))
    print(json.dumps({"dataset": str(out), **summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
