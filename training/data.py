"""Corpora to cached note arrays, a deterministic split by piece (copies share one), and augmented token windows.

Sources: music21's bundled corpus (collections by composer name), any folder of MIDI files, and a
MAESTRO-layout folder (its CSV's split column). Each piece is parsed once and cached as a note array
(pitch, onset_s, offset_s, velocity) under the cache folder; a file that fails is skipped and counted
with its reason. Tokens are made at training time from the notes, after augmentation, through the
same Encoder the daemon uses.

    python -m training.data --music21 bach palestrina --cache .cache/data   # parse and cache
    python -m training.data --midi ~/big-folder --workers 8                 # thousands of files

Files are parsed in parallel (--workers processes) with a progress bar and the run's ETA. A piece's
cache entry is keyed by its path, size and modification time, so a run that was interrupted, or a
folder that grew, parses only what is new or changed; a file that failed is remembered too, with
its reason. The dataset is two files: NAME.npz (piece ids, splits, piece starts, failures) and
NAME.notes.npy (every note), which training memory-maps rather than reads.
"""

from __future__ import annotations

import argparse
import csv
import os
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


# Styles: a family of the training data per piece, learned as a token after START. music21's
# collections by family; a MIDI folder's pieces by their first subfolder (files at its top level take
# the folder's own name); MAESTRO is one style. joplin is one file in music21's corpus: one piece is
# no family to learn or to hold out, so it goes with the classical keyboard music.
MUSIC21_STYLES = {
    "bach": "chorale",
    **{name: "renaissance" for name in ("palestrina", "josquin", "monteverdi", "trecento", "ciconia", "luca",
                                        "lusitano")},
    **{name: "classical" for name in ("beethoven", "mozart", "haydn", "handel", "schubert", "chopin", "weber",
                                      "verdi", "cpebach", "corelli", "joplin", "schumann_clara", "schumann_robert",
                                      "beach", "johnson_j_r", "liliuokalani")},
    **{name: "folk" for name in ("essenFolksong", "ryansMammoth", "oneills1850", "airdsAirs", "miscFolk",
                                 "nottingham-dataset")},
}


def style_of(piece_id: str) -> str:
    """A piece's style from its id: music21/COLLECTION/... by family, maestro/... is "maestro",
    FOLDER/SUB/... is SUB (a user's subfolders are their own styles), FOLDER/FILE is FOLDER."""
    parts = piece_id.split("/")
    if parts[0] == "music21" and len(parts) > 1:
        return MUSIC21_STYLES.get(parts[1], parts[1])
    if parts[0] == "maestro":
        return "maestro"
    return parts[1] if len(parts) > 2 else parts[0]


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


def cache_key(kind: str, path: str) -> str:
    """A file's cache entry name: its path, size and modification time, so an edited file is parsed again."""
    try:
        stat = os.stat(path)
        version = f"{stat.st_size}:{stat.st_mtime_ns}"
    except OSError:  # missing: the parser says so, and the failure is not kept
        version = "missing"
    return hashlib.sha1(f"{kind}:{path}:{version}".encode()).hexdigest()


def _parse_cached(job: tuple[str, str, str]) -> tuple[str, str, np.ndarray | None, str]:
    """Worker: (kind, path, cache_dir) -> (path, kind, notes or None, reason).

    Notes are kept as KEY.npy, and a failure as KEY.failed (its reason), so neither is parsed again
    until the file changes.
    """
    kind, path, cache_dir = job
    key = cache_key(kind, path)
    cache_file = Path(cache_dir) / "pieces" / f"{key}.npy"
    failed_file = cache_file.with_suffix(".failed")
    try:
        return path, kind, np.load(cache_file), ""
    except (OSError, ValueError):  # not cached (or a torn file from another version): parse it
        pass
    try:
        return path, kind, None, failed_file.read_text()
    except OSError:
        pass
    try:
        notes = parse_score(path) if kind == "music21" else parse_midi(path)
        reason = "" if len(notes) else "no pitched notes"
    except MidiFileError as err:
        notes, reason = None, str(err)
    except Exception as err:  # a parser's failure on one file never stops the run
        notes, reason = None, f"{type(err).__name__}: {err}"
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    if reason:
        if os.path.exists(path):
            _write_atomic(failed_file, reason.encode())
        return path, kind, None, reason
    tmp = cache_file.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, notes)
    tmp.replace(cache_file)
    return path, kind, notes, ""


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


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
def notes_path_for(path: Path) -> Path:
    """The notes array beside a dataset file: NAME.npz -> NAME.notes.npy."""
    return path.with_name(path.name.removesuffix(".npz") + ".notes.npy")


@dataclass
class Dataset:
    notes: np.ndarray  # (N, 4) float32: pitch, onset_s, offset_s, velocity (memory-mapped when loaded)
    starts: np.ndarray  # (P + 1,) int64: piece p is notes[starts[p]:starts[p + 1]]
    piece_ids: list[str]
    splits: list[str]
    failures: dict[str, str] = field(default_factory=dict)
    keys: list[str] | None = None  # content keys, one a piece (computed from the notes when absent)
    styles: list[str] | None = None  # one a piece (from the piece ids when absent: style_of)

    def __post_init__(self) -> None:
        if self.styles is None or len(self.styles) != len(self.piece_ids):
            self.styles = [style_of(piece_id) for piece_id in self.piece_ids]

    def style_names(self) -> tuple[str, ...]:
        """The data's styles, sorted: the STYLE tokens of a model trained on it, in this order."""
        return tuple(sorted(set(self.styles)))

    def pieces(self, split: str) -> list[int]:
        return [i for i, s in enumerate(self.splits) if s == split]

    def piece_notes(self, index: int) -> np.ndarray:
        return self.notes[self.starts[index] : self.starts[index + 1]]

    def save(self, path: Path) -> None:
        """NAME.npz (small: ids, splits, starts, failures, content keys) and NAME.notes.npy (the notes)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        notes_path = notes_path_for(path)
        tmp_notes = notes_path.with_name(notes_path.name + ".tmp.npy")
        np.save(tmp_notes, np.ascontiguousarray(self.notes, dtype=np.float32))
        tmp_notes.replace(notes_path)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, starts=self.starts, piece_ids=np.array(self.piece_ids), splits=np.array(self.splits),
                 failures=json.dumps(self.failures), keys=np.array(self.content_keys()), styles=np.array(self.styles),
                 notes_file=notes_path.name, notes_count=len(self.notes))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "Dataset":
        """The notes memory-mapped (read-only, shared by processes on a machine); a dataset saved
        before the notes had their own file (notes inside the .npz) is read whole."""
        path = Path(path)
        with np.load(path) as data:
            ids, splits = [str(p) for p in data["piece_ids"]], [str(s) for s in data["splits"]]
            failures, starts = json.loads(str(data["failures"])), data["starts"]
            keys = [str(k) for k in data["keys"]] if "keys" in data.files else None
            styles = [str(s) for s in data["styles"]] if "styles" in data.files else None
            if "notes" in data.files:  # the single-file format
                return cls(data["notes"], starts, ids, splits, failures, keys, styles)
            notes_path, count = path.with_name(str(data["notes_file"])), int(data["notes_count"])
        try:
            notes = np.load(notes_path, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise TrainingError(f"{path}: its notes file {notes_path.name} cannot be read ({err}); the two files "
                                "are written together: build the dataset again with python -m training.data") from err
        if notes.shape != (count, NOTE_COLUMNS) or (len(starts) and starts[-1] != count):
            raise TrainingError(f"{path}: its notes file {notes_path.name} holds {notes.shape[0]} notes, not the "
                                f"{count} it was saved with; build the dataset again with python -m training.data")
        # A plain ndarray over the map: numpy's memmap subclass wraps every result it computes (a few
        # per cent of the window sampler's time); the view reads the same pages.
        return cls(notes.view(np.ndarray), starts, ids, splits, failures, keys, styles)

    def content_keys(self) -> list[str]:
        if self.keys is None or len(self.keys) != len(self.piece_ids):
            self.keys = [content_key(self.piece_notes(i)) for i in range(len(self.piece_ids))]
        return self.keys

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
        summary = {"pieces": dict(counts), "notes": notes, "failed_files": len(self.failures), "duplicates": duplicates,
                   "styles": {s: {split: sum(1 for st, sp in zip(self.styles, self.splits) if st == s and sp == split)
                                  for split in SPLITS} for s in self.style_names()}}
        if split_apart:
            summary["duplicates_in_another_split"] = split_apart
        return summary


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60:02d}:{seconds % 60:02d}"


class ParseProgress:
    """The parsing step's progress: a bar with the run's ETA (tqdm, when no `progress` callback is
    given), else a line through `progress` every few seconds and at the end."""

    def __init__(self, total: int, progress=None, every_s: float = 5.0):
        self.total, self.progress, self.every_s = total, progress, every_s
        self.started = self.last = time.monotonic()
        self.bar = None
        if progress is None:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, desc="parsing", unit="file", dynamic_ncols=True, mininterval=1)
            except ImportError:
                self.progress = print

    def update(self, done: int, skipped: int, cached: int) -> None:
        if self.bar is not None:
            self.bar.set_postfix(skipped=skipped, cached=cached, refresh=False)
            self.bar.update(done - self.bar.n)
            return
        now = time.monotonic()
        if done < self.total and now - self.last < self.every_s:
            return
        self.last, elapsed = now, now - self.started
        rate = done / max(elapsed, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else 0.0
        self.progress(f"parsed {done}/{self.total} files ({cached} from the cache), {skipped} skipped, "
                      f"{rate:,.0f} files/s, {clock(elapsed)} elapsed, ETA {clock(eta)}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def build_dataset(jobs: list[tuple[str, str, str]], cache_dir: str, split_override: dict[str, str] | None = None,
                  workers: int = 2, progress=None) -> Dataset:
    """Parse (or read from the cache) every file, in `workers` processes. `progress` takes a line
    every few seconds; without it a progress bar shows the run's ETA."""
    split_override = split_override or {}
    ids_by_path = {path: piece_id for piece_id, _, path in jobs}
    work = [(kind, path, cache_dir) for _, kind, path in jobs]
    pieces = Path(cache_dir) / "pieces"
    cached = sum(1 for _, kind, path in jobs if (pieces / f"{cache_key(kind, path)}.npy").exists()
                 or (pieces / f"{cache_key(kind, path)}.failed").exists()) if pieces.is_dir() else 0
    arrays, piece_ids, keys, failures = [], [], [], {}
    meter = ParseProgress(len(work), progress)
    # Chunks of a few files keep the workers busy without one holding a long tail at the end.
    chunksize = max(1, min(32, len(work) // (8 * max(1, workers))))
    try:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for done, (path, _, notes, reason) in enumerate(pool.imap(_parse_cached, work, chunksize=chunksize), 1):
                if notes is None:
                    failures[path] = reason
                else:
                    arrays.append(notes)
                    piece_ids.append(ids_by_path[path])
                    keys.append(content_key(notes))
                meter.update(done, len(failures), cached)
    finally:
        meter.close()
    starts = np.cumsum([0] + [len(a) for a in arrays]).astype(np.int64)
    notes = np.concatenate(arrays) if arrays else np.zeros((0, NOTE_COLUMNS), np.float32)
    del arrays
    splits = split_by_content(piece_ids, keys, split_override)
    return Dataset(notes, starts, piece_ids, splits, failures, keys)


def failures_report(failures: dict[str, str], shown: int = 5) -> list[str]:
    """The skipped files in a few lines: the first few with their reason, then how many more."""
    items = sorted(failures.items())
    lines = [f"skipped {path}: {reason}" for path, reason in items[:shown]]
    if len(items) > shown:
        lines.append(f"... and {len(items) - shown} more skipped files (all {len(items)} are listed, with their "
                     "reasons, in the dataset's failures)")
    return lines


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


TURN_PHRASE_NOTES = (6, 32)  # the phrase before an answer, in notes
TURN_PAUSE_S = (0.3, 1.5)  # the pause after it, as before an answer
TURN_OTHER_STYLE = 0.5  # the share of answers that follow another style's phrase (a turn of style)
TURN_TRIES = 8  # draws for a piece of another style (a split of one style has none)


class WindowSampler:
    """Random windows of `length + 1` tokens from one split, augmented, as int64 arrays.

    A window starts at a random note of a piece chosen in proportion to its length; it begins with
    START, as a live context does, and (when the vocabulary has styles) the piece's style token, so a
    window cut from the middle of a piece still hears its style. With `style_dropout`, that share of
    windows has no style token: the model also serves a context without a style.

    With `answer_share`, that share of windows is shaped as improv answers: START and the style's token, a
    phrase, a pause, the style's token again (the engine feeds it before each answer), then the answer,
    scored alone (`batch_scored` says where it begins). Half of them (TURN_OTHER_STYLE) are a turn of
    style: the phrase is another style's and the answer a piece of this one, so the token next to the
    answer says what comes whatever came before; in the others the piece goes on after its phrase. In
    windows of one piece the context tells the style anyway, so without these the token teaches the
    model almost nothing (docs/development.md, "Styles").
    """

    def __init__(self, dataset: Dataset, split: str, vocab: Vocabulary, length: int,
                 augment: Augment | None, seed: int, style_dropout: float = 0.0, answer_share: float = 0.0):
        self.dataset, self.vocab, self.length, self.augment = dataset, vocab, length, augment
        self.style_dropout, self.answer_share = style_dropout, answer_share
        self.pieces = dataset.pieces(split)
        if not self.pieces:
            raise TrainingError(f"the {split} split has no pieces (the data has {len(dataset.piece_ids)} pieces: "
                                f"{dict(Counter(dataset.splits))}); add more files")
        sizes = np.array([dataset.starts[i + 1] - dataset.starts[i] for i in self.pieces], dtype=np.float64)
        self.weights = sizes / sizes.sum()
        self.rng = np.random.default_rng(seed)
        self.notes_per_window = max(16, length // 2)  # about 2-4 tokens a note; extended if short

    def _piece(self) -> int:
        return self.pieces[self.rng.choice(len(self.pieces), p=self.weights)]

    def _chunk(self, piece: int, take: int, room: int = 8) -> np.ndarray:
        """`take` notes of a piece from a random note with at least `room` after it (where the piece
        allows), augmented, starting at time 0."""
        notes = self.dataset.piece_notes(piece)
        start = int(self.rng.integers(0, max(1, len(notes) - room)))
        chunk = notes[start : start + take]
        chunk = self.augment.apply(chunk, self.rng) if self.augment is not None else chunk.copy()
        chunk[:, 1:3] -= chunk[:, 1].min()
        return chunk

    def window(self) -> np.ndarray:
        return self.window_scored()[0]

    def window_scored(self) -> tuple[np.ndarray, int]:
        """A window and the position of its first scored token (0: all of it)."""
        piece = self._piece()
        style = piece_style(self.dataset, piece, self.vocab)
        if style is not None and self.answer_share and self.rng.random() < self.answer_share:
            return self._turn(piece, style)
        notes = self.dataset.piece_notes(piece)
        start = int(self.rng.integers(0, max(1, len(notes) - 8)))
        take = self.notes_per_window
        if style is not None and self.style_dropout and self.rng.random() < self.style_dropout:
            style = None
        while True:
            chunk = notes[start : start + take]
            if self.augment is not None:
                chunk = self.augment.apply(chunk, self.rng)
            tokens = encode_notes(self.vocab, to_note_list(chunk), style=style)
            if len(tokens) >= self.length + 1 or start + take >= len(notes):
                break
            take *= 2
        return self._padded(tokens), 0

    def _turn(self, piece: int, style: str) -> tuple[np.ndarray, int]:
        """START and the style's token, a phrase, a pause, the style's token again, then the answer:
        the piece going on, or after another style's phrase, a piece of this style. Scored from the answer."""
        phrase_notes = int(self.rng.integers(*TURN_PHRASE_NOTES))
        before = None
        if self.rng.random() < TURN_OTHER_STYLE:
            draws = (self._piece() for _ in range(TURN_TRIES))
            before = next((i for i in draws if piece_style(self.dataset, i, self.vocab) not in (None, style)), None)
        if before is None:  # the piece itself: a phrase of it, and the answer goes on with it
            both = self._chunk(piece, phrase_notes + self.notes_per_window, room=phrase_notes + 8)
            phrase, after = both[:phrase_notes].copy(), both[phrase_notes:].copy()
            if len(after):  # keys held into the answer are let go before the pause
                phrase[:, 2] = np.maximum(np.minimum(phrase[:, 2], after[:, 1].min()), phrase[:, 1] + 0.02)
        else:
            phrase, after = self._chunk(before, phrase_notes), self._chunk(piece, self.notes_per_window)
        if len(after):
            after[:, 1:3] -= after[:, 1].min()
        pause_steps = round(self.rng.uniform(*TURN_PAUSE_S) * 1000 / self.vocab.time_step_ms)
        pause = [self.vocab.time_shift(min(left, self.vocab.time_shift_steps))
                 for left in range(pause_steps, 0, -self.vocab.time_shift_steps)]
        heard = encode_notes(self.vocab, to_note_list(phrase), style=style)
        while len(heard) > self.length // 2 and len(phrase) > 2:  # the answer keeps at least half the window
            phrase = phrase[len(phrase) // 2:]
            phrase[:, 1:3] -= phrase[:, 1].min()
            heard = encode_notes(self.vocab, to_note_list(phrase), style=style)
        tokens = [*heard, *pause, self.vocab.style(style)]
        first = len(tokens)
        tokens += encode_notes(self.vocab, to_note_list(after), start_token=False)
        return self._padded(tokens), min(first, self.length + 1)

    def _padded(self, tokens: list[int]) -> np.ndarray:
        out = np.full(self.length + 1, self.vocab.special("PAD"), dtype=np.int64)
        tokens = tokens[: self.length + 1]
        out[: len(tokens)] = tokens
        return out

    def batch(self, size: int) -> np.ndarray:
        return self.batch_scored(size)[0]

    def batch_scored(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(size, length + 1) windows, and each one's first scored position."""
        windows, firsts = zip(*(self.window_scored() for _ in range(size)))
        return np.stack(windows), np.array(firsts, dtype=np.int64)


def piece_style(dataset: Dataset, piece: int, vocab: Vocabulary) -> str | None:
    """A piece's style when the vocabulary has it (a model with styles), else None (no style token)."""
    style = dataset.styles[piece]
    return style if style in vocab.styles else None


def held_out_tokens(dataset: Dataset, split: str, vocab: Vocabulary, pieces: list[int] | None = None) -> list[np.ndarray]:
    """Each held-out piece as one token array, unaugmented: the pieces' own notes (after START and, for a
    vocabulary with styles, the piece's style token). `pieces` picks some of the split's pieces."""
    pieces = dataset.pieces(split) if pieces is None else pieces
    return [np.array(encode_notes(vocab, to_note_list(dataset.piece_notes(i)), style=piece_style(dataset, i, vocab)),
                     dtype=np.int64) for i in pieces]


def augmented_tokens(dataset: Dataset, split: str, vocab: Vocabulary, copies: int, seed: int,
                     pieces: list[int] | None = None) -> list[np.ndarray]:
    """Each piece of a split, augmented as in training (keys, tempo, dynamics, timing). `pieces` picks
    some of the split's pieces; the random draws are the whole split's, so a piece is augmented the
    same way whichever of them are kept."""
    rng, augment, out = np.random.default_rng(seed), Augment(), []
    keep = None if pieces is None else set(pieces)
    for _ in range(copies):
        for index in dataset.pieces(split):
            notes = augment.apply(dataset.piece_notes(index), rng)
            if keep is None or index in keep:
                out.append(np.array(encode_notes(vocab, to_note_list(notes), style=piece_style(dataset, index, vocab)),
                                    dtype=np.int64))
    return out


@reports_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--music21", nargs="*", default=[], metavar="NAME", help="music21 corpus collections")
    parser.add_argument("--midi", nargs="*", default=[], metavar="DIR", help="folders of .mid/.midi files")
    parser.add_argument("--maestro", metavar="DIR", help="a MAESTRO-layout folder (uses its CSV split)")
    parser.add_argument("--cache", default=".cache/data", help="cache folder (git-ignored)")
    parser.add_argument("--out", default=None, help="dataset file (default CACHE/dataset.npz)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 2),
                        help="parsing processes (default: the CPUs, at most 8)")
    parser.add_argument("--test-by-path", nargs="*", default=[], metavar="NAME",
                        help="these music21 collections' test pieces by the path hash alone (the split of models "
                             "made before splits went by content) stay test pieces, every copy of them with them")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    jobs, overrides = music21_paths(args.music21) if args.music21 else [], {}
    for folder in args.midi:
        jobs += midi_folder_paths(folder)
    if args.maestro:
        maestro_jobs, overrides = maestro_paths(args.maestro)
        jobs += maestro_jobs
    if not jobs:
        parser.error("no files: name --music21 collections, --midi folders or --maestro")
    if args.test_by_path:
        overrides = {**overrides, **{piece_id: "test" for piece_id, _, _ in music21_paths(args.test_by_path)
                                     if split_of(piece_id) == "test"}}
    started = time.monotonic()
    dataset = build_dataset(jobs, args.cache, overrides, args.workers)
    elapsed = time.monotonic() - started
    out = Path(args.out or Path(args.cache) / "dataset.npz")
    dataset.save(out)
    for line in failures_report(dataset.failures):
        print(line, file=sys.stderr)
    summary = dataset.summary()
    print(f"{len(jobs)} files in {elapsed:.1f} s ({len(jobs) / max(elapsed, 1e-9):,.0f} files/s), "
          f"{len(dataset.failures)} skipped; notes in {notes_path_for(out)}")
    print(duplicates_note(summary))
    print(json.dumps({"dataset": str(out), **summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
