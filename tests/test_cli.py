"""The `improv` command as a user runs it: real files in, one clear line out on bad input."""

import json
import subprocess
import sys

import mido
import pytest

from conftest import CHORALE, EXPRESSIVE, ROOT


def improv(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "improv.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=120)


def assert_clean_error(result, *fragments):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("improv: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_tokens_shows_names_or_ids():
    names = improv("tokens", CHORALE).stdout.split()
    ids = improv("tokens", CHORALE, "--ids").stdout.split()
    assert names[0] == "START" and "NOTE_ON_" in " ".join(names[:10])
    assert len(names) == len(ids) > 300 and all(i.isdigit() for i in ids)


def test_generate_writes_seed_and_continuation_on_two_tracks(tmp_path):
    out = tmp_path / "out.mid"
    result = improv("generate", "--seed", CHORALE, "--out", out, "--seconds", 5, "--random-seed", 1)
    assert result.returncode == 0, result.stderr
    midi = mido.MidiFile(out)
    names = [next(m.name for m in t if m.type == "track_name") for t in midi.tracks]
    assert names == ["player", "improv"]
    improv_onsets = [m for m in midi.tracks[1] if m.type == "note_on" and m.velocity > 0]
    assert len(improv_onsets) >= 5


def test_eval_reports_json_with_the_documented_keys(tmp_path):
    (tmp_path / "sub").mkdir()
    for path in (CHORALE, EXPRESSIVE):
        (tmp_path / "sub" / path.name).write_bytes(path.read_bytes())
    (tmp_path / "notes.txt").write_text("not midi")
    result = improv("eval", tmp_path, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["files"] == 2 and report["tokens"] > 500
    assert report["model_bits_per_token"] > 0 and report["markov_bits_per_token"] > 0
    assert 0 <= report["next_pitch_accuracy"] <= 1


def test_eval_adapt_scores_second_halves_with_the_session_memory():
    result = improv("eval", CHORALE.parent, "--json", "--adapt", "--attachment", "0.8")
    assert result.returncode == 0, result.stderr
    adapt = json.loads(result.stdout)["adapt"]
    assert adapt["files"] == 2 and adapt["attachment"] == 0.8
    assert 0 < adapt["adapted_notes"] < adapt["adapted_tokens"]
    # These pieces repeat their phrases: having heard the first half helps predict the second.
    assert adapt["adapted_bits_per_note"] < adapt["model_bits_per_note"]
    assert_clean_error(improv("eval", CHORALE.parent, "--adapt", "--attachment", "2"),
                       "memory.attachment must be in range 0.0..1.0, got 2.0")


def test_adapted_scores_are_prequential(shipped_model):
    # Each token is scored before the memory learns it. In a piece of distinct tokens the memory has
    # never heard the token it scores, so it gives it at most 1/V, and the mix at most the larger of
    # that and the model's probability. A memory that learned each token before scoring it would give
    # it far more.
    import math

    import numpy as np

    from improv.evaluate import _log_softmax, adapted_scores, model_logits

    tokens = np.random.default_rng(0).permutation(np.arange(2, shipped_model.vocab.size))
    scores = adapted_scores(shipped_model, tokens, attachment=1.0)
    log_p = np.array([_log_softmax(row) for row in model_logits(shipped_model, tokens)])
    half = (len(tokens) - 1) // 2
    floor = -math.log(shipped_model.vocab.size)
    bound = -sum(max(log_p[i, t], floor) for i, t in enumerate(tokens[1:]) if i >= half) / math.log(2)
    assert scores["adapted_bits"] >= bound - 1e-6


def write_midi(path, messages):
    midi = mido.MidiFile()
    track = mido.MidiTrack(messages)
    midi.tracks.append(track)
    midi.save(path)
    return path


@pytest.fixture
def bad_files(tmp_path):
    text = tmp_path / "notes.mid"
    text.write_text("this is not a MIDI file")
    drums = write_midi(tmp_path / "drums.mid", [mido.Message("note_on", channel=9, note=36, velocity=100),
                                                mido.Message("note_off", channel=9, note=36, time=240)])
    meta = write_midi(tmp_path / "meta.mid", [mido.MetaMessage("track_name", name="x"),
                                              mido.MetaMessage("set_tempo", tempo=400000)])
    empty = write_midi(tmp_path / "empty.mid", [])
    return {"text": text, "drums": drums, "meta": meta, "empty": empty}


@pytest.mark.parametrize("kind, fragment", [("text", "is not a readable MIDI file"), ("drums", "has only drums"),
                                            ("meta", "has no notes"), ("empty", "has no notes")])
def test_bad_midi_files_get_one_clear_line(bad_files, kind, fragment, tmp_path):
    path = bad_files[kind]
    assert_clean_error(improv("tokens", path), str(path), fragment)
    assert_clean_error(improv("generate", "--seed", path, "--out", tmp_path / "o.mid"), fragment)


def test_missing_corrupt_and_foreign_models_get_one_clear_line(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    assert_clean_error(improv("tokens", CHORALE, "--model", tmp_path / "none.onnx"), "does not exist")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 100)
    assert_clean_error(improv("tokens", CHORALE, "--model", corrupt), "not a loadable ONNX model")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "foreign", [x], [y])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), foreign)
    assert_clean_error(improv("eval", CHORALE.parent, "--model", foreign), "an improv model has inputs")


def test_a_model_without_or_with_a_foreign_vocabulary_is_refused(tmp_path):
    import onnx

    from improv.events import Vocabulary
    from improv.model import VOCAB_KEY, default_model_path

    graph = onnx.load(str(default_model_path()))
    del graph.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(graph, bare)
    assert_clean_error(improv("tokens", CHORALE, "--model", bare), VOCAB_KEY)
    spec = json.loads(onnx.load(str(default_model_path())).metadata_props[0].value)
    logits = sum(size for _, _, size in spec["groups"])
    spec["velocity_bins"] = 16  # a layout the logits do not fit (a STYLE group, if any, moves down after it)
    spec["groups"] = [list(g) for g in Vocabulary(velocity_bins=16, styles=tuple(spec.get("styles", ()))).groups]
    graph.metadata_props.add(key=VOCAB_KEY, value=json.dumps(spec))
    odd = tmp_path / "odd.onnx"
    onnx.save(graph, odd)
    assert_clean_error(improv("tokens", CHORALE, "--model", odd), f"logits have {logits} entries")


def test_run_refuses_a_bad_setting_before_touching_any_port(tmp_path):
    assert_clean_error(improv("run", "--temperature", "-1"), "sampling.temperature must be > 0, got -1.0")
    config = tmp_path / "bad.yaml"
    config.write_text("limits:\n  max_note_ms: 0\n")
    assert_clean_error(improv("run", "--config", config), "limits.max_note_ms must be in range 10..600000, got 0")


@pytest.mark.skipif(__import__("os").path.exists("/dev/snd/seq"), reason="this machine has an ALSA sequencer")
def test_with_no_midi_system_one_line_says_what_to_start():
    import os

    env = {**os.environ, "JACK_DEFAULT_SERVER": "improv-no-such-server", "JACK_NO_START_SERVER": "1"}
    result = subprocess.run([sys.executable, "-m", "improv.cli", "run", "--no-record"], capture_output=True,
                            text=True, timeout=60, env=env)
    assert_clean_error(result, "no MIDI system is available", "jackd")
    result = subprocess.run([sys.executable, "-m", "improv.cli", "ports", "--backend", "alsa"], capture_output=True,
                            text=True, timeout=60, env=env)
    assert_clean_error(result, "MIDI backend 'alsa' is not available", "snd-seq")


def test_generate_names_an_output_path_it_cannot_write(tmp_path):
    assert_clean_error(improv("generate", "--seed", CHORALE, "--out", tmp_path / "no-such-dir" / "o.mid"),
                       "no-such-dir", "does not exist")
    assert_clean_error(improv("generate", "--seed", CHORALE, "--out", tmp_path), str(tmp_path), "is a folder")


def test_a_model_folder_is_called_a_folder(tmp_path):
    result = improv("tokens", CHORALE, "--model", CHORALE.parent)
    assert_clean_error(result, "is a folder, not a model file")
    assert "does not exist" not in result.stderr


def test_run_refuses_a_recording_folder_it_cannot_create_before_opening_ports(tmp_path):
    import os

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config = tmp_path / "record.yaml"
    config.write_text(f"recording: {{folder: {blocker / 'sessions'}}}\n")
    # No MIDI system is reachable under this server name: the error must come before any port is tried.
    env = {**os.environ, "JACK_DEFAULT_SERVER": "improv-no-such-server", "JACK_NO_START_SERVER": "1"}
    result = subprocess.run([sys.executable, "-m", "improv.cli", "run", "--config", str(config)],
                            capture_output=True, text=True, timeout=60, env=env)
    assert_clean_error(result, "recording.folder", str(blocker / "sessions"), "cannot be created")


def test_a_broken_config_yaml_in_the_current_folder_is_read_and_refused(tmp_path):
    (tmp_path / "config.yaml").write_text("engine:\n  mode: [continuous\n")
    assert_clean_error(improv("generate", "--seed", CHORALE, "--out", tmp_path / "o.mid", cwd=tmp_path),
                       "config.yaml is not valid YAML", "line 3, column 1")


def test_generate_takes_a_key_and_refuses_a_bad_one_in_one_line(tmp_path):
    out = tmp_path / "out.mid"
    result = improv("generate", "--seed", CHORALE, "--out", out, "--seconds", 4, "--random-seed", 3,
                    "--key", "C:major", "--key-strength", 1)
    assert result.returncode == 0, result.stderr
    ons = [m.note for m in mido.MidiFile(out).tracks[1] if m.type == "note_on" and m.velocity > 0]
    assert ons and {p % 12 for p in ons} <= {0, 2, 4, 5, 7, 9, 11}
    assert_clean_error(improv("generate", "--seed", CHORALE, "--out", out, "--key", "H:major"),
                       "key.name: 'H' is not a tonic")
    assert_clean_error(improv("run", "--key-strength", "2", "--no-record"), "key.strength must be in range 0.0..1.0")


def test_models_lists_a_folders_models_with_their_program_numbers(tmp_path):
    result = improv("models")
    assert result.returncode == 0, result.stderr
    assert "program   0  improv-lstm.int8.onnx" in result.stdout and "program   1  improv-lstm.onnx" in result.stdout
    assert_clean_error(improv("models", "--models", tmp_path), "holds no .onnx model")
    assert_clean_error(improv("models", tmp_path), "holds no .onnx model")
    assert_clean_error(improv("run", "--models", tmp_path, "--no-record"), "model.folder", "holds no .onnx model")
    (tmp_path / "mine.onnx").write_bytes(b"")
    assert "program   0  mine.onnx" in improv("models", tmp_path).stdout
