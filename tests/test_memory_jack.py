"""The session memory in `improv run`, through a real JACK server: a phrase played again is answered
with its own material, far more than the LSTM alone answers it, and what the memory learned is what
was heard."""

import time
from collections import Counter

import mido
import numpy as np
import pytest

from conftest import wait_for
from improv.config import Config
from improv.memory import SessionMemory, memory_path_for
from improv.tools.probe import note_ons
from jackserver import launch_improv, stop_improv

pytestmark = pytest.mark.jack
SILENCE_MS = 300
MELODY = (60, 62, 64, 65, 67, 65, 64, 62, 60, 67)
RESET_CC, ATTACHMENT_CC = Config().controls.reset, Config().controls.attachment
NOTE_EVERY_S, NOTE_S = 0.2, 0.17
# Fifteen periods of the test server (512 frames at 48 kHz) make 160 ms, a whole number of the model's
# 10 ms steps: hearings this far apart are stamped alike to the step, so they are heard as the same tokens.
HEARINGS_APART_S = 30 * 0.16


def trigrams(pitches) -> list[tuple[int, ...]]:
    return [tuple(pitches[i : i + 3]) for i in range(len(pitches) - 2)]


def from_the_melody(pitches) -> float:
    grams, own = trigrams(pitches), set(trigrams(MELODY))
    return sum(gram in own for gram in grams) / len(grams) if grams else 0.0


def play_and_listen(client, start_s: float, answer_s: float = 2.5) -> list[int]:
    """The melody at exact times from `start_s` (each note at its frame), then improv's answer."""
    client.drain()
    for i, pitch in enumerate(MELODY):
        client.send_at(start_s + i * NOTE_EVERY_S, 0x90, pitch, 90)
        client.send_at(start_s + i * NOTE_EVERY_S + NOTE_S, 0x80, pitch, 0)
    time.sleep(max(0.0, start_s + len(MELODY) * NOTE_EVERY_S - time.monotonic()) + SILENCE_MS / 1000 + answer_s)
    return [m[1] for _, m in note_ons(client.drain())]


def test_a_phrase_played_again_is_answered_with_its_own_material(client, tmp_path):
    # One answer is a small, random sample: the phrase is played twice in each of six pieces, with a
    # reset (which empties the memory) between pieces, three with the session memory (attachment 0.8)
    # and three without it (0, the LSTM alone, turned by the attachment CC); the answers to the second
    # playings are set against each other. (The first answer against the second is no measure: the
    # memory's contexts are classes of time, so the first answer already quotes the phrase where
    # improv's own timing differs from the player's by a few milliseconds.)
    config = tmp_path / "memory.yaml"
    config.write_text("engine: {response_ms: 2000}\nmemory: {attachment: 0.8}\n")
    process = launch_improv(client, "--no-record", "--config", str(config), "--silence-ms", str(SILENCE_MS))
    seconds: dict[float, list[list[int]]] = {0.8: [], 0.0: []}
    try:
        for _ in range(3):
            for attachment in seconds:
                client.send(0xB0, ATTACHMENT_CC, round(attachment * 127))
                client.send(0xB0, RESET_CC, 127)
                first_s = time.monotonic() + 0.2
                play_and_listen(client, first_s)
                seconds[attachment].append(play_and_listen(client, first_s + HEARINGS_APART_S))
    finally:
        code, stderr = stop_improv(process)
    assert all(seconds[0.8] + seconds[0.0]), f"an answer was missing: {seconds}\n{stderr[-2000:]}"
    with_memory = np.mean([from_the_melody(a) for a in seconds[0.8]])
    without = np.mean([from_the_melody(a) for a in seconds[0.0]])
    print(f"share of the melody's trigrams in improv's answers to its second playing: with the memory "
          f"{with_memory:.2f}, without {without:.2f}")
    assert with_memory > without + 0.2, (with_memory, without, seconds)
    assert code == 0, stderr


def test_the_memory_learns_what_was_heard_and_nothing_that_was_played_over(client, tmp_path, shipped_model):
    # With learn_own, the memory learns improv's notes too, but only those that went out: answers are
    # generated ahead, and the player plays over each, so some generated notes are never heard.
    folder = tmp_path / f"sessions-{time.monotonic_ns()}"
    config = tmp_path / "own.yaml"
    config.write_text(f"recording: {{folder: {folder}}}\nmemory: {{learn_own: true}}\n"
                      "engine: {response_ms: 5000, lookahead_ms: 400}\n")
    process = launch_improv(client, "--config", str(config), "--silence-ms", str(SILENCE_MS))
    try:
        for round_ in range(3):
            client.play(MELODY[:5], note_s=0.12, gap_s=0.03)
            wait_for(lambda: note_ons(client.pending()), timeout_s=SILENCE_MS / 1000 + 3.0)
            time.sleep(0.4)  # mid-answer, with notes generated ahead of the clock
            client.play([48 + round_], note_s=0.1, gap_s=0.3)  # the player comes in over it
    finally:
        code, stderr = stop_improv(process)
    assert code == 0, stderr
    recordings = list(folder.glob("*.mid"))
    assert len(recordings) == 1, stderr[-2000:]
    take = mido.MidiFile(recordings[0])
    heard = Counter(m.note for track in take.tracks for m in track if m.type == "note_on" and m.velocity > 0)
    vocab = shipped_model.vocab
    memory = SessionMemory.load(memory_path_for(recordings[0]), vocab.to_json(), vocab.size)
    learned = {pitch: int(memory.unigram[vocab.note_on(pitch)]) for pitch in range(128)
               if memory.unigram[vocab.note_on(pitch)]}
    assert learned == dict(heard), f"learned {learned}, heard {dict(heard)}"
