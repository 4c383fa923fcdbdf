"""Does each style steer the output? Continuations of the same seeds under each style, their pitch and
rhythm statistics set against each style's held-out pieces.

    python -m training.styles_table --model exported_models/improv-lstm.int8.onnx --data .cache/data/styles.npz

Seeds: the first SEED_SECONDS of test pieces, taken in turn from each style (the same seeds for every
style). Each seed is continued for --seconds under each style (and with no style token) on the daemon's
engine and virtual clock, as `improv generate --seed SEED --style S --style-strength G --attachment 0
--random-seed K` does, with the session memory off (attachment 0) so the seed's notes are not copied
back. Statistics of a set of
notes: register (median pitch), pitch spread (standard deviation), the top voice's step (mean absolute
interval between successive onsets' highest notes), onsets a second, notes an onset (chords), median note
length and the spread of the inter-onset intervals (coefficient of variation). The held-out side: each
style's test pieces as scored, cut into excerpts as long as a continuation. Each statistic is scaled by its
spread over all held-out excerpts; the distance is Euclidean over the scaled statistics. Prints the table
as markdown, then one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from improv.config import DEFAULT_STYLE_STRENGTH, Config
from improv.events import Msg, NoteEvent, notes_to_messages
from improv.offline import continue_performance
from training.data import Dataset, to_note_list

FEATURES = ("median_pitch", "pitch_sd", "top_step", "onsets_per_s", "notes_per_onset", "median_length_s", "ioi_cv")


def features(notes: list[tuple[int, float, float]]) -> np.ndarray | None:
    """(pitch, onset_s, offset_s) notes -> the statistics above, or None for too few notes."""
    if len(notes) < 8:
        return None
    pitch = np.array([n[0] for n in notes], float)
    onset = np.array([n[1] for n in notes], float)
    length = np.array([max(n[2] - n[1], 0.0) for n in notes], float)
    grid = np.round(onset / 0.03).astype(int)  # onsets within 30 ms are one onset (a chord)
    times, first = np.unique(grid, return_index=True)
    top = np.array([pitch[grid == t].max() for t in times])
    span = max(onset.max() - onset.min(), 1e-3)
    ioi = np.diff(times) * 0.03
    ioi = ioi[ioi > 0]
    return np.array([np.median(pitch), pitch.std(), np.abs(np.diff(top)).mean() if len(top) > 1 else 0.0,
                     len(times) / span, len(notes) / len(times), np.median(length),
                     ioi.std() / ioi.mean() if len(ioi) > 1 else 0.0])


def events_to_notes(events: list[NoteEvent]) -> list[tuple[int, float, float]]:
    sounding, notes = {}, []
    for event in sorted(events, key=lambda e: (e.time_s, e.is_on)):
        if event.is_on:
            if event.pitch in sounding:
                notes.append((event.pitch, sounding.pop(event.pitch), event.time_s))
            sounding[event.pitch] = event.time_s
        elif event.pitch in sounding:
            notes.append((event.pitch, sounding.pop(event.pitch), event.time_s))
    end = max((e.time_s for e in events), default=0.0)
    notes += [(p, t, end) for p, t in sounding.items()]
    return sorted(notes, key=lambda n: (n[1], n[0]))


def excerpts(notes: np.ndarray, seconds: float) -> list[list[tuple[int, float, float]]]:
    """A piece cut into excerpts `seconds` long (the last, shorter one dropped)."""
    out, start, end = [], float(notes[0, 1]), float(notes[:, 1].max())
    while start + seconds <= end + 1e-6:
        keep = (notes[:, 1] >= start) & (notes[:, 1] < start + seconds)
        out.append([(int(p), float(on), float(off)) for p, on, off, _ in notes[keep]])
        start += seconds
    return out


def seed_messages(notes: np.ndarray, seconds: float) -> list[tuple[float, Msg]]:
    start = float(notes[0, 1])
    kept = notes[notes[:, 1] < start + seconds].copy()
    kept[:, 1:3] -= start
    kept[:, 2] = np.minimum(kept[:, 2], seconds)
    return notes_to_messages(to_note_list(kept))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="exported_models/improv-lstm.int8.onnx")
    parser.add_argument("--data", default=".cache/data/styles.npz", help="the dataset the model was trained on")
    parser.add_argument("--seeds", type=int, default=6, help="seeds, taken in turn from each style's test pieces")
    parser.add_argument("--seed-seconds", type=float, default=4.0)
    parser.add_argument("--seconds", type=float, default=20.0, help="each continuation's length")
    parser.add_argument("--runs", type=int, default=2, help="random seeds per seed and style")
    parser.add_argument("--style-strength", type=float, default=DEFAULT_STYLE_STRENGTH,
                        help="style guidance (model.style_strength): 1 is the model as trained")
    parser.add_argument("--json", help="also write the JSON here")
    args = parser.parse_args(argv)

    from improv.model import open_stepped

    model = open_stepped(args.model, lambda: args.style_strength)
    styles = list(model.vocab.styles)
    dataset = Dataset.load(Path(args.data))
    test = dataset.pieces("test")
    by_style = {s: [i for i in test if dataset.styles[i] == s] for s in styles}

    reference, per_excerpt = {}, []
    for style, pieces in by_style.items():
        rows = [f for i in pieces for e in excerpts(dataset.piece_notes(i), args.seconds)
                if (f := features(e)) is not None]
        per_excerpt += rows
        reference[style] = {"pieces": len(pieces), "excerpts": len(rows), "mean": np.mean(rows, axis=0)}
    scale = np.std(per_excerpt, axis=0) + 1e-9

    rng = np.random.default_rng(0)
    seeds = []  # (style of the piece, piece id, messages)
    while len(seeds) < args.seeds:
        style = styles[len(seeds) % len(styles)]
        index = int(rng.choice(by_style[style]))
        seeds.append((style, dataset.piece_ids[index], seed_messages(dataset.piece_notes(index), args.seed_seconds)))

    config = Config()
    config.memory.attachment = 0.0
    steered = {}
    for style in [*styles, None]:
        config.model.style = style
        rows = []
        for seed_number, (_, _, messages) in enumerate(seeds):
            for run in range(args.runs):
                events = continue_performance(model, config, messages, args.seconds,
                                              np.random.default_rng(1000 * seed_number + run))
                start = max(t for t, _ in messages) + config.engine.silence_ms / 1000
                answer = [e for e in events if e.time_s >= start - 1e-6]
                f = features(events_to_notes(answer))
                if f is not None:
                    rows.append(f)
        steered[style or "none"] = {"continuations": len(rows), "mean": np.mean(rows, axis=0)}

    distances = {name: {ref: float(np.linalg.norm((row["mean"] - reference[ref]["mean"]) / scale))
                        for ref in styles} for name, row in steered.items()}
    closest = {name: min(d, key=d.get) for name, d in distances.items()}
    lines = [f"Seeds: {len(seeds)} ({', '.join(f'{pid} ({s})' for s, pid, _ in seeds)}), the first "
             f"{args.seed_seconds:g} s of each; {args.runs} continuations of {args.seconds:g} s per seed and style "
             f"(attachment 0, style strength {args.style_strength:g}). Held-out: each style's test pieces as scored, in {args.seconds:g} s excerpts.", "",
             "Distance (scaled statistics) from the continuations under each style to each style's held-out pieces; "
             "the nearest in bold:", "",
             "| continued as | " + " | ".join(f"{s} held-out" for s in styles) + " | nearest |",
             "|---|" + "---|" * (len(styles) + 1)]
    for name, d in distances.items():
        cells = [f"**{d[s]:.2f}**" if s == closest[name] else f"{d[s]:.2f}" for s in styles]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {closest[name]} |")
    lines += ["", "The statistics (means):", "",
              "| notes | " + " | ".join(FEATURES) + " |", "|---|" + "---|" * len(FEATURES)]
    for label, row in [*((f"{s} held-out ({reference[s]['excerpts']} excerpts of {reference[s]['pieces']} "
                          f"pieces)", reference[s]) for s in styles),
                       *((f"continued as {n} ({r['continuations']})", r) for n, r in steered.items())]:
        lines.append(f"| {label} | " + " | ".join(f"{v:.2f}" for v in row["mean"]) + " |")
    print("\n".join(lines))
    result = {"model": args.model, "style_strength": args.style_strength, "features": FEATURES, "seeds": [[s, pid] for s, pid, _ in seeds],
              "seed_seconds": args.seed_seconds, "seconds": args.seconds, "runs": args.runs,
              "reference": {s: {"pieces": r["pieces"], "excerpts": r["excerpts"], "mean": r["mean"].round(3).tolist()}
                            for s, r in reference.items()},
              "steered": {n: {"continuations": r["continuations"], "mean": r["mean"].round(3).tolist()}
                          for n, r in steered.items()},
              "distances": {n: {s: round(v, 3) for s, v in d.items()} for n, d in distances.items()},
              "nearest": closest,
              "styles_nearest_their_own": sum(closest[s] == s for s in styles),
              "each_style_nearest_its_own": all(closest[s] == s for s in styles)}
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
