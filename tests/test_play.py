"""`improv play` into a running `improv run`, through a real JACK server: the test player is answered."""

import subprocess
import sys
import time

import mido
import pytest

from conftest import CHORALE
from improv.tools.probe import note_ons, sounding_after
from jackserver import ROOT, launch_improv, stop_improv

pytestmark = pytest.mark.jack
SILENCE_MS = 300


def opening_with_notes_held(source, seconds: float, out) -> int:
    """The first `seconds` of a file, cut off with notes still held (a player stopping mid-chord);
    returns how many notes are held at the cut."""
    midi = mido.MidiFile(source)
    kept, held, now = mido.MidiTrack(), set(), 0.0
    for msg in midi:
        now += msg.time
        if now > seconds:
            break
        if not msg.is_meta:
            kept.append(msg.copy(time=round(mido.second2tick(msg.time, 480, 500_000))))
            if msg.type == "note_on" and msg.velocity > 0:
                held.add((msg.channel, msg.note))
            elif msg.type in ("note_on", "note_off"):
                held.discard((msg.channel, msg.note))
    file = mido.MidiFile(ticks_per_beat=480)
    file.tracks.append(kept)
    file.save(out)
    return len(held)


def test_a_file_played_into_improv_run_is_answered(client, tmp_path):
    seed = tmp_path / "opening.mid"
    assert opening_with_notes_held(CHORALE, 3.0, seed) > 0  # play must lift these keys itself
    folder = tmp_path / f"sessions-{time.monotonic_ns()}"
    config = tmp_path / "record.yaml"
    config.write_text(f"recording: {{folder: {folder}}}\nengine: {{response_ms: 1500}}\n")
    process = launch_improv(client, "--config", str(config), "--silence-ms", str(SILENCE_MS))
    try:
        played = subprocess.run([sys.executable, "-m", "improv.cli", "play", str(seed), "--out", "improv:in",
                                 "--backend", "jack"], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert played.returncode == 0, played.stderr
        deadline = time.monotonic() + SILENCE_MS / 1000 + 3.0
        while not note_ons(client.pending()) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(2.0)  # the answer is at most 1.5 s long
        events = client.drain()
    finally:
        code, stderr = stop_improv(process)
    assert "panic" not in stderr, "improv play's ending was taken as a panic"
    assert note_ons(events), f"improv run did not answer improv play:\n{stderr[-2000:]}"
    assert not sounding_after(events)
    assert code == 0, stderr
    startup = next(line for line in stderr.splitlines() if "listening on" in line)
    assert "improv-lstm" in startup and str(config) in startup and str(folder) in startup, startup
