"""Write a corpus's held-out pieces as MIDI files, so `improv eval` (which reads MIDI) can score them.

    python -m training.heldout --music21 bach palestrina ... --out .cache/heldout [--split test]

Pieces are chosen by the path hash the shipped model's split used (training.data.split_of), and only
those are parsed. Each is written twice: as scored (`scored/`) and varied as a player would
(`player-like/`, augmented once with the fixed seed the model card's held-out figures used).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from improv.events import NoteEvent
from improv.midi.files import write_tracks
from training.data import EVAL_AUGMENT_SEED, SPLITS, Augment, _parse_cached, music21_paths, split_of
from training.errors import reports_errors

# The collections of the shipped model (exported_models/improv-lstm.md, "Reproduce").
SHIPPED_COLLECTIONS = ("bach palestrina beethoven mozart haydn monteverdi trecento josquin handel schubert joplin "
                       "chopin weber verdi cpebach corelli ciconia luca").split()


def note_events(notes: np.ndarray) -> list[NoteEvent]:
    return [event for pitch, on, off, velocity in notes
            for event in (NoteEvent(float(on), int(pitch), int(velocity)), NoteEvent(float(off), int(pitch), 0))]


@reports_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--music21", nargs="*", default=list(SHIPPED_COLLECTIONS), metavar="NAME",
                        help="music21 collections (default: the shipped model's)")
    parser.add_argument("--out", required=True, help="folder to write scored/ and player-like/ into")
    parser.add_argument("--split", default="test", choices=SPLITS, help="which held-out split (default: test)")
    parser.add_argument("--cache", default=".cache/data", help="parsed pieces are cached here (default: .cache/data)")
    args = parser.parse_args(argv)
    jobs = [job for job in music21_paths(args.music21) if split_of(job[0]) == args.split]
    rng, augment, written = np.random.default_rng(EVAL_AUGMENT_SEED), Augment(), 0
    for number, (piece_id, kind, path) in enumerate(jobs, 1):
        _, _, notes, reason = _parse_cached((kind, path, args.cache))
        if notes is None:
            print(f"skipped {piece_id}: {reason}", file=sys.stderr)
            continue
        name = piece_id.removeprefix("music21/").replace("/", "_").rsplit(".", 1)[0] + ".mid"
        for folder, piece in (("scored", notes), ("player-like", augment.apply(notes, rng))):
            (Path(args.out) / folder).mkdir(parents=True, exist_ok=True)
            write_tracks(Path(args.out) / folder / name, [("player", note_events(piece))])
        written += 1
        print(f"{number}/{len(jobs)} {piece_id}")
    print(f"wrote {written} {args.split} pieces to {args.out}/scored and {args.out}/player-like")
    return 0


if __name__ == "__main__":
    sys.exit(main())
