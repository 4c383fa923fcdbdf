"""A soak run: a simulated player through JACK against `improv run` in continuous mode.

    python -m improv.tools.soak --minutes 10 [--start-jack] [--json]

The player plays phrases (single notes, chords, the pedal, a spread of velocities) with pauses long
enough for improv to stop, so each phrase's first improv note is a clean reaction time. Reported:
stuck notes the client counts at the end, the daemon's resident memory over the run, and the
reaction time of the first and of the last minute.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import time

import numpy as np

from improv.tools.bench import reaction_summary_ms
from improv.tools.jackd import jack_running, start_private_jack
from improv.tools.probe import ProbeClient, note_ons, sounding_after
from improv.tools.procstat import process_rss_mib

PLAY_ON_MS = 800  # improv stops this long after the player: pauses longer than this reset to silence


def play_phrase(client: ProbeClient, rng: random.Random) -> float | None:
    """One phrase; returns when its first chord entered JACK (the start of the cycle that carried it,
    as arrivals are stamped), or None if it never left."""
    first, heard = None, False
    root = rng.randrange(48, 72)
    pedal = rng.random() < 0.3
    if pedal:
        client.send(0xB0, 64, 127)
    for _ in range(rng.randrange(3, 12)):
        chord = [root + rng.choice([0, 2, 4, 5, 7, 9, 11, 12])] + ([root - 12] if rng.random() < 0.3 else [])
        velocity = rng.randrange(20, 127)
        for pitch in chord:
            client.send(0x90, pitch, velocity)
        if not heard:  # sent within microseconds of each other: one cycle carries the chord
            first, heard = client.last_sent_s(), True
        time.sleep(rng.uniform(0.08, 0.4))
        for pitch in chord:
            client.send(0x80, pitch, 0)
        time.sleep(rng.uniform(0.0, 0.1))
    if pedal:
        client.send(0xB0, 64, 0)
    return first


def soak(minutes: float, model: str | None = None, seed: int = 0) -> dict:
    rng = random.Random(seed)
    model_args = ["--model", model] if model else []
    client = ProbeClient("soak")
    daemon = subprocess.Popen([sys.executable, "-m", "improv.cli", "run", "--backend", "jack", "--no-record",
                               "--mode", "continuous", "--response-ms", str(PLAY_ON_MS), *model_args],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    samples: list[tuple[float, float]] = []  # (elapsed s, reaction ms)
    rss: list[tuple[float, float]] = []
    phrases = 0
    try:
        client.connect()
        time.sleep(1.0)
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < minutes * 60:
            first = play_phrase(client, rng)
            phrases += 1
            time.sleep(PLAY_ON_MS / 1000 + 0.7)
            ons = [t for t, _ in note_ons(client.pending()) if first is not None and t >= first]
            if ons:
                samples.append((elapsed, (ons[0] - first) * 1000))
            rss.append((elapsed, process_rss_mib(daemon.pid)))
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
        time.sleep(0.3)
        events = client.drain()
        client.close()
    window_s = min(60.0, minutes * 60 / 3)

    def reaction(select) -> dict | None:
        return reaction_summary_ms([ms for t, ms in samples if select(t)])

    total_s = minutes * 60
    first_rss = [m for t, m in rss if t < window_s]
    last_rss = [m for t, m in rss if t >= total_s - window_s]
    return {
        "minutes": minutes, "model": model or "shipped", "phrases": phrases, "exit_code": daemon.returncode,
        "stuck_notes": len(sounding_after(events)),
        "rss_first_mib": round(float(np.median(first_rss)), 1) if first_rss else None,
        "rss_last_mib": round(float(np.median(last_rss)), 1) if last_rss else None,
        "rss_growth_mib": round(float(np.median(last_rss) - np.median(first_rss)), 2) if first_rss and last_rss else None,
        "window_s": window_s,
        "reaction_ms": reaction(lambda t: True),
        "reaction_first_window_ms": reaction(lambda t: t < window_s),
        "reaction_last_window_ms": reaction(lambda t: t >= total_s - window_s),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--start-jack", action="store_true", help="start a private JACK server if none runs")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--model", help="an exported .onnx (default: the shipped model)")
    args = parser.parse_args(argv)
    jack = start_private_jack() if (args.start_jack and not jack_running()) else None
    if not jack_running():
        print("improv soak: error: no JACK server runs; start one or pass --start-jack", file=sys.stderr)
        return 1
    try:
        result = soak(args.minutes, args.model)
    finally:
        if jack is not None:
            jack.terminate()
            jack.wait()
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0 if result["stuck_notes"] == 0 and result["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
