"""A corpus's held-out pieces, as the model card scores them: as token sets, as MIDI files, and
scored with the session memory.

    python -m training.heldout --out .cache/heldout                # write scored/ and player-like/ MIDI
    python -m training.heldout --adapt --model exported_models/improv-lstm.int8.onnx

Pieces are chosen by the path hash the shipped model's split used (training.data.split_of), and only
those are parsed. "as scored" is each piece as written; "player-like" is each augmented once with the
fixed seed the card's held-out figures use, in the same order, so the token sets are the card's own.
`--adapt` prints, for each set, the second halves scored by the model alone and with the session
memory (improv eval --adapt does the same for any folder of MIDI files).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from improv.events import NoteEvent, Vocabulary
from improv.memory import BALANCED_ATTACHMENT
from improv.midi.files import write_tracks
from training.data import (EVAL_AUGMENT_SEED, SPLITS, Augment, Dataset, _parse_cached, augmented_tokens,
                           held_out_tokens, music21_paths, split_of)
from training.errors import TrainingError, reports_errors

# The collections of the shipped model (exported_models/improv-lstm.md, "Reproduce").
SHIPPED_COLLECTIONS = ("bach palestrina beethoven mozart haydn monteverdi trecento josquin handel schubert joplin "
                       "chopin weber verdi cpebach corelli ciconia luca").split()


def held_out_dataset(collections: list[str], split: str, cache: str) -> Dataset:
    """The pieces of one split only, in corpus order, parsed (or read from the cache)."""
    arrays, ids = [], []
    for piece_id, kind, path in music21_paths(collections):
        if split_of(piece_id) != split:
            continue
        _, _, notes, reason = _parse_cached((kind, path, cache))
        if notes is None:
            print(f"skipped {piece_id}: {reason}", file=sys.stderr)
            continue
        arrays.append(notes)
        ids.append(piece_id)
    if not arrays:
        raise TrainingError(f"no {split} pieces in {' '.join(collections)}")
    starts = np.cumsum([0] + [len(a) for a in arrays]).astype(np.int64)
    return Dataset(np.concatenate(arrays), starts, ids, [split] * len(ids))


def token_sets(dataset: Dataset, split: str, vocab: Vocabulary) -> dict[str, list[np.ndarray]]:
    """The card's two held-out sets: augmented as a player would vary them (one fixed seed), and as scored."""
    return {"player-like": augmented_tokens(dataset, split, vocab, 1, EVAL_AUGMENT_SEED),
            "as scored": held_out_tokens(dataset, split, vocab)}


def note_events(notes: np.ndarray) -> list[NoteEvent]:
    return [event for pitch, on, off, velocity in notes
            for event in (NoteEvent(float(on), int(pitch), int(velocity)), NoteEvent(float(off), int(pitch), 0))]


def write_midi(dataset: Dataset, out: Path) -> int:
    """Each piece as scored/NAME.mid and, augmented as for the card, player-like/NAME.mid."""
    rng, augment, written = np.random.default_rng(EVAL_AUGMENT_SEED), Augment(), 0
    for index, piece_id in enumerate(dataset.piece_ids):
        notes = dataset.piece_notes(index)
        name = piece_id.removeprefix("music21/").replace("/", "_").rsplit(".", 1)[0] + ".mid"
        for folder, piece in (("scored", notes), ("player-like", augment.apply(notes, rng))):
            (out / folder).mkdir(parents=True, exist_ok=True)
            write_tracks(out / folder / name, [("player", note_events(piece))])
        written += 1
    return written


@reports_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--music21", nargs="*", default=list(SHIPPED_COLLECTIONS), metavar="NAME",
                        help="music21 collections (default: the shipped model's)")
    parser.add_argument("--split", default="test", choices=SPLITS, help="which held-out split (default: test)")
    parser.add_argument("--cache", default=".cache/data", help="parsed pieces are cached here (default: .cache/data)")
    parser.add_argument("--out", help="write the pieces as MIDI into OUT/scored and OUT/player-like")
    parser.add_argument("--adapt", action="store_true", help="score the sets with and without the session memory")
    parser.add_argument("--model", help="with --adapt: an exported .onnx (default: the shipped model)")
    parser.add_argument("--attachment", type=float, default=BALANCED_ATTACHMENT,
                        help=f"with --adapt (default: {BALANCED_ATTACHMENT})")
    args = parser.parse_args(argv)
    if not args.out and not args.adapt:
        parser.error("give --out DIR, --adapt, or both")
    dataset = held_out_dataset(args.music21, args.split, args.cache)
    if args.out:
        print(f"wrote {write_midi(dataset, Path(args.out))} {args.split} pieces to {args.out}/scored and "
              f"{args.out}/player-like")
    if args.adapt:
        from improv.evaluate import evaluate_adapted
        from improv.model import OnnxModel

        model = OnnxModel(args.model)
        for name, tokens in token_sets(dataset, args.split, model.vocab).items():
            print(json.dumps({"set": name, "files": len(tokens), **evaluate_adapted(model, tokens, args.attachment)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
