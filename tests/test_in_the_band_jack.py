"""improv run in a band, through a real JACK server: its output routed back into its input, and
everything the player sends passed through."""

import re
import time

import pytest

from conftest import wait_for
from improv.tools.probe import note_ons, sounding_after
from jackserver import launch_improv, stop_improv

pytestmark = pytest.mark.jack
SILENCE_MS = 300


def loop_back(client) -> None:
    """improv:out into improv:in, as a DAW monitoring improv's track into improv would."""
    keys = client.keys
    result = keys.jack.jack_connect(keys.client, b"improv:out", b"improv:in")
    assert result in (0, 17), f"jack_connect improv:out improv:in failed ({result})"
    time.sleep(0.2)


def test_improv_with_its_output_looped_into_its_input_answers_the_player_not_itself(client):
    process = launch_improv(client, "--no-record", "--silence-ms", str(SILENCE_MS), "--config",
                            "tests/data/short-answers.yaml", "--verbose")
    try:
        loop_back(client)
        client.drain()
        for _ in range(2):
            last_up = client.play([60, 64, 67, 72], note_s=0.1, gap_s=0.03)
            time.sleep(SILENCE_MS / 1000 + 1.5 + 2.5)  # the answer lasts at most 1.5 s; then silence
            events = client.drain()
            ons = note_ons(events)
            assert ons, "no answer"
            answer = [t for t, _ in ons if t > last_up]
            assert answer and answer[-1] - answer[0] <= 1.5 + 0.1, "improv went on answering itself"
            assert len(answer) / 1.5 < 25, f"{len(answer)} notes in 1.5 s"
            assert max(t for t, _ in ons) < last_up + SILENCE_MS / 1000 + 1.5 + 0.2, "silence did not return"
            assert not sounding_after(events), "a note was left sounding"
    finally:
        code, stderr = stop_improv(process)
    assert code == 0, stderr[-2000:]
    assert stderr.count("coming back on its input") == 1, stderr[-2000:]
    # improv heard its own notes as such: the player's 8 note-ons were the only ones it took in
    heard_ons = re.findall(r"in +[\d.]+ note_on channel=0 note=\d+ velocity=(\d+)", stderr)
    assert len(heard_ons) == 8 and all(v == "90" for v in heard_ons), heard_ons


def test_pass_through_carries_bends_aftertouch_and_controllers_and_the_take_keeps_them(client, tmp_path):
    import mido

    config = tmp_path / "band.yaml"
    config.write_text(f"midi: {{pass_through: true}}\nengine: {{enabled: false}}\nrecording: {{folder: '{tmp_path}'}}\n")
    process = launch_improv(client, "--config", str(config))
    played = [[0x90, 60, 90], [0xE0, 0x00, 0x50], [0xD0, 0x40], [0xA0, 60, 0x30], [0xB0, 1, 64], [0x80, 60, 0]]
    try:
        time.sleep(0.3)
        client.drain()  # improv's clean slate at start
        for data in played:
            client.send(*data)
            time.sleep(0.02)
        time.sleep(0.3)
        arrived = [m for _, m in client.drain()]
    finally:
        code, stderr = stop_improv(process)
    assert code == 0, stderr[-2000:]
    assert arrived == played
    take = next(tmp_path.glob("improv-session-*.mid"))
    assert [m.bytes() for m in mido.MidiFile(take).tracks[0] if not m.is_meta] == played


def test_a_program_change_switches_the_model_mid_answer_and_nothing_is_left_sounding(client, tmp_path):
    from improv.model import default_model_path

    shipped = default_model_path().parent
    for name in ("improv-lstm.int8.onnx", "improv-lstm.onnx"):  # program 0, program 1
        (tmp_path / name).symlink_to(shipped / name)
    process = launch_improv(client, "--no-record", "--silence-ms", str(SILENCE_MS), "--models", str(tmp_path),
                            "--config", "tests/data/long-notes.yaml")
    try:
        client.play([48, 60, 64, 67])
        assert wait_for(lambda: sounding_after(client.pending()), timeout_s=5), "improv never had a note sounding"
        client.send(0xC0, 1)
        time.sleep(1.5)
        events = client.drain()
        assert not sounding_after(events), "a note was left sounding across the switch"
        last_up = client.play([60, 62, 64])
        time.sleep(SILENCE_MS / 1000 + 1.0)
        assert [t for t, _ in note_ons(client.drain()) if t > last_up], "the new model did not answer"
    finally:
        code, stderr = stop_improv(process)
    assert code == 0, stderr[-2000:]
    assert "program 1: model improv-lstm.onnx" in stderr
