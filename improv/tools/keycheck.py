"""How often improv's live key detection agrees with music21's `analyze('key')`, over MIDI files.

    python -m improv.tools.keycheck DIR [--json]

For each .mid under DIR, the notes (note-ons and note-offs) are fed to improv.key.KeyDetector at their times, as
`improv run --key auto` hears them, and the key it holds at the end of the piece is compared with
music21's key of the whole file (tonic and mode both must agree). Reported for the live detector
(the histogram halves every HALF_LIFE_S seconds) and for one that never forgets (the whole piece,
as music21 takes it). Needs music21 (pip install '.[train]').
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from improv.key import HALF_LIFE_S, KeyDetector, parse_tonic


def detected(path: Path, half_life_s: float | None):
    from improv.events import DRUM_CHANNEL
    from improv.midi.files import read_messages

    detector = KeyDetector(half_life_s)
    for time_s, msg in read_messages(path):
        if msg.type not in ("note_on", "note_off") or msg.channel == DRUM_CHANNEL:
            continue
        if msg.type == "note_on" and msg.velocity > 0:
            detector.note_on(time_s, msg.note)
        else:
            detector.note_off(time_s, msg.note)
    return detector.key


def music21_key(path: Path) -> tuple[int, str]:
    from music21 import converter

    key = converter.parse(str(path)).analyze("key")
    return parse_tonic(key.tonic.name.replace("-", "b")), key.mode


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m improv.tools.keycheck", description=__doc__.splitlines()[0])
    parser.add_argument("dir", help="a folder of .mid files (e.g. python -m training.heldout --out DIR writes 98)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    files = sorted(p for p in Path(args.dir).rglob("*") if p.suffix.lower() in (".mid", ".midi"))
    agree = {"live": 0, "whole": 0}
    tonic_only = {"live": 0, "whole": 0}
    rows = []
    for path in files:
        reference = music21_key(path)
        row = {"file": str(path), "music21": f"{reference[0]}:{reference[1]}"}
        for name, half_life in (("live", HALF_LIFE_S), ("whole", None)):
            key = detected(path, half_life)
            row[name] = str(key)
            if key is not None and key.tonic == reference[0]:
                tonic_only[name] += 1
                agree[name] += key.scale == reference[1]
        rows.append(row)
    n = len(files)
    result = {"files": n, "agree_live": agree["live"] / n, "agree_whole_piece": agree["whole"] / n,
              "tonic_live": tonic_only["live"] / n, "tonic_whole_piece": tonic_only["whole"] / n,
              "half_life_s": HALF_LIFE_S}
    if args.json:
        print(json.dumps({**result, "pieces": rows}))
    else:
        print(f"{n} files: improv's key agrees with music21's (tonic and mode) in {agree['live']} "
              f"({result['agree_live']:.0%}) live (half-life {HALF_LIFE_S:g} s), {agree['whole']} "
              f"({result['agree_whole_piece']:.0%}) over the whole piece; tonic alone {tonic_only['live']} / "
              f"{tonic_only['whole']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
