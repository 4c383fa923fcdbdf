"""How much of the player's own material improv plays back: continuations of real phrases with and
without the session memory, on the virtual clock, over several random seeds.

    python -m improv.tools.motifs tests/data/*.mid --attachment 0 0.8 --seeds 8 --seconds 8 [--json]

For each seed file and attachment it reports the share of improv's pitch 4-grams that occur in the
seed (motif reuse) and the share of improv's notes whose pitch class the seed used (staying in its
pitch classes), each averaged over the random seeds.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from improv.config import Config
from improv.midi.files import read_messages
from improv.midi.messages import DRUM_CHANNEL
from improv.model import OnnxModel
from improv.offline import continue_performance

GRAM = 4


def pitch_grams(pitches: list[int], n: int = GRAM) -> list[tuple[int, ...]]:
    return [tuple(pitches[i : i + n]) for i in range(len(pitches) - n + 1)]


def onset_pitches(messages) -> list[int]:
    return [m.note for _, m in messages if m.type == "note_on" and m.velocity > 0 and m.channel != DRUM_CHANNEL]


def reuse(seed_pitches: list[int], answer_pitches: list[int]) -> tuple[float | None, float | None]:
    """(share of the answer's pitch 4-grams found in the seed, share of its notes in the seed's pitch classes)."""
    if not answer_pitches:
        return None, None
    seed_grams = set(pitch_grams(seed_pitches))
    grams = pitch_grams(answer_pitches)
    classes = {p % 12 for p in seed_pitches}
    gram_share = sum(g in seed_grams for g in grams) / len(grams) if grams else None
    return gram_share, sum(p % 12 in classes for p in answer_pitches) / len(answer_pitches)


def measure(model: OnnxModel, files: list[str], attachments: list[float], seeds: int, seconds: float) -> list[dict]:
    rows = []
    for path in files:
        seed = read_messages(path)
        seed_pitches = onset_pitches(seed)
        for attachment in attachments:
            config = Config()
            config.memory.attachment = attachment
            grams, classes, notes = [], [], []
            for random_seed in range(seeds):
                answer = continue_performance(model, config, seed, seconds, np.random.default_rng(random_seed))
                pitches = [e.pitch for e in sorted(answer, key=lambda e: e.time_s) if e.is_on]
                gram_share, class_share = reuse(seed_pitches, pitches)
                notes.append(len(pitches))
                if gram_share is not None:
                    grams.append(gram_share)
                if class_share is not None:
                    classes.append(class_share)
            rows.append({"file": str(path), "attachment": attachment, "seeds": seeds,
                         "notes_per_answer": round(float(np.mean(notes)), 1),
                         "seed_4gram_share": round(float(np.mean(grams)), 3) if grams else None,
                         "seed_pitch_class_share": round(float(np.mean(classes)), 3) if classes else None})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="seed MIDI files (what the player played)")
    parser.add_argument("--attachment", type=float, nargs="+", default=[0.0, 0.8], help="attachments to compare")
    parser.add_argument("--seeds", type=int, default=8, help="random seeds per file and attachment (default: 8)")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each continuation (default: 8)")
    parser.add_argument("--model", help="an exported .onnx (default: the shipped model)")
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of a table")
    args = parser.parse_args(argv)
    rows = measure(OnnxModel(args.model), args.files, args.attachment, args.seeds, args.seconds)
    if args.json:
        print(json.dumps(rows))
    else:
        for row in rows:
            print(f"{row['file']}  attachment {row['attachment']}: {row['notes_per_answer']} notes, "
                  f"4-grams from the seed {row['seed_4gram_share']}, in its pitch classes {row['seed_pitch_class_share']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
