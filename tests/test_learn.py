"""improv learn: the next CC moved is written into the config file, its comments kept."""

import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT
from improv import config as config_module
from improv.errors import ImprovError
from improv.learn import control_name, learn, with_mapping
from memory_midi import MemoryMidi

REPO_CONFIG = (ROOT / "config.yaml").read_text()


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    a, b = before.splitlines(), after.splitlines()
    assert len(a) == len(b)
    return [(x, y) for x, y in zip(a, b) if x != y]


def test_the_settings_line_alone_changes_and_keeps_its_comment():
    edited = with_mapping(REPO_CONFIG, "temperature", 74)
    assert changed_lines(REPO_CONFIG, edited) == [
        ("  temperature: 21         # CC value 0..127 -> temperature 0.1..2.0",
         "  temperature: 74         # CC value 0..127 -> temperature 0.1..2.0")]
    [(old, new)] = changed_lines(REPO_CONFIG, with_mapping(REPO_CONFIG, "reset", 5))
    assert new.startswith("  reset: 5 ") and new.index("#") == old.index("#") and new[old.index("#"):] == \
        old[old.index("#"):]
    loaded = config_module.from_dict(__import__("yaml").safe_load(edited))
    assert loaded.controls.temperature == 74


def test_a_missing_line_or_section_is_added():
    assert with_mapping("controls:\n  top_p: 22  # mine\n\nmemory:\n  attachment: 0.5\n", "temperature", 74) == \
        "controls:\n  top_p: 22  # mine\n  temperature: 74\n\nmemory:\n  attachment: 0.5\n"
    assert with_mapping("# just a comment\nengine:\n  silence_ms: 400", "answer", 40) == \
        "# just a comment\nengine:\n  silence_ms: 400\ncontrols:\n  answer: 40\n"
    assert with_mapping("", "temperature", 1) == "controls:\n  temperature: 1\n"
    with pytest.raises(ImprovError, match="written on one line"):
        with_mapping("controls: {temperature: 21}\n", "temperature", 74)


def test_a_setting_is_named_by_its_control_or_its_dotted_key():
    assert control_name("temperature") == "temperature"
    assert control_name("key.strength") == "key_strength"
    assert control_name("answer") == "answer"
    with pytest.raises(ImprovError, match="'seed' is not a setting a CC can control"):
        control_name("seed")


def learn_with(path, setting, *played):
    midi = MemoryMidi()

    def play():
        while not midi.inputs:
            time.sleep(0.01)
        for data in played:
            midi.play(*data)

    threading.Thread(target=play, daemon=True).start()
    return learn(setting, path, midi, "improv", None, timeout_s=5, announce=lambda text: None)


def test_learn_writes_the_next_cc_and_refuses_one_another_control_has(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(REPO_CONFIG)
    # A note and the mod wheel's channel-mode neighbours do not count; the CC moved does.
    assert learn_with(path, "temperature", [0x90, 60, 90], [0xB0, 123, 0], [0xB1, 74, 10]) == 74
    assert changed_lines(REPO_CONFIG, path.read_text()) == [
        ("  temperature: 21         # CC value 0..127 -> temperature 0.1..2.0",
         "  temperature: 74         # CC value 0..127 -> temperature 0.1..2.0")]
    before = path.read_text()
    with pytest.raises(ImprovError, match=r"CC 22 cannot control temperature: .*controls\.temperature and "
                                          r"controls\.top_p are both mapped to CC 22"):
        learn_with(path, "temperature", [0xB0, 22, 5])
    assert path.read_text() == before
    with pytest.raises(ImprovError, match="no control change came within"):
        learn("top_p", path, MemoryMidi(), "improv", None, timeout_s=0.2, announce=lambda text: None)


@pytest.mark.jack
def test_improv_learn_through_jack_writes_the_cc_moved_into_the_config(jack, tmp_path):
    from improv.midi.jack import JackMidiClient

    path = tmp_path / "config.yaml"
    path.write_text(REPO_CONFIG)
    process = subprocess.Popen([sys.executable, "-m", "improv.cli", "learn", "temperature", "--config", str(path),
                                "--backend", "jack", "--timeout", "30"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    keys = JackMidiClient("learn-keys", in_name=None, out_name="keys")
    try:
        assert "listening on" in process.stdout.readline()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                keys.connect("out", "improv:in")
                break
            except Exception:
                time.sleep(0.05)
        time.sleep(0.2)
        keys.send([0xB0, 74, 100])
        out, err = process.communicate(timeout=20)
    finally:
        keys.close()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "CC 74 now controls temperature" in out
    assert changed_lines(REPO_CONFIG, path.read_text()) == [
        ("  temperature: 21         # CC value 0..127 -> temperature 0.1..2.0",
         "  temperature: 74         # CC value 0..127 -> temperature 0.1..2.0")]
