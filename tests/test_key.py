"""Keys and scales (improv.key), the key held in generation, and the key detected live."""

import numpy as np
import pytest

from conftest import DATA
from improv import config as config_module
from improv.config import Config
from improv.engine import Engine
from improv.errors import ConfigError
from improv.events import Msg, Vocabulary
from improv.key import SCALES, KeyDetector, make_key, parse_key, parse_tonic, penalty
from improv.midi.files import read_messages
from improv.offline import VirtualClock, continue_performance, perform, run_until
from scripted_model import ScriptedModel, favour

C_MAJOR = {0, 2, 4, 5, 7, 9, 11}


@pytest.mark.parametrize("name, pitch_classes", [
    ("C:major", C_MAJOR),
    ("A:minor", C_MAJOR),
    ("a:natural-minor", C_MAJOR),
    ("D:dorian", C_MAJOR),
    ("A:harmonic-minor", {9, 11, 0, 2, 4, 5, 8}),
    ("A:melodic-minor", {9, 11, 0, 2, 4, 6, 8}),
    ("Eb:major", {3, 5, 7, 8, 10, 0, 2}),
    ("F#:blues", {6, 9, 11, 0, 1, 4}),
    ("G:major-pentatonic", {7, 9, 11, 2, 4}),
    ("E:minor-pentatonic", {4, 7, 9, 11, 2}),
    ("custom:0,2,4,7,9", {0, 2, 4, 7, 9}),
])
def test_a_key_name_gives_its_pitch_classes(name, pitch_classes):
    assert parse_key(name).pitch_classes == pitch_classes


def test_every_church_mode_is_a_rotation_of_the_major_scale():
    modes = ("ionian", "dorian", "phrygian", "lydian", "mixolydian", "aeolian", "locrian")
    major = SCALES["major"]
    for shift, mode in enumerate(modes):
        tonic = major[shift]
        assert make_key(tonic, mode).pitch_classes == C_MAJOR, mode


def test_auto_none_and_custom_with_the_config_list():
    assert parse_key("auto") == "auto" and parse_key("none") is None
    assert parse_key("custom", [0, 3, 7]).pitch_classes == {0, 3, 7}
    cfg = config_module.from_dict({"key": {"name": "custom", "pitch_classes": [0, 2, 4, 7, 9], "strength": 0.5}})
    assert cfg.key.pitch_classes == [0, 2, 4, 7, 9]


@pytest.mark.parametrize("raw, message", [
    ({"key": {"name": "H:major"}}, "key.name: 'H' is not a tonic"),
    ({"key": {"name": "C:bebop"}}, "key.name: 'C:bebop': unknown scale 'bebop'"),
    ({"key": {"name": "Cmajor"}}, "key.name: 'Cmajor' is not a key"),
    ({"key": {"name": "custom"}}, "key.name: custom needs key.pitch_classes"),
    ({"key": {"name": "custom:0,12"}}, "key.name: 'custom:0,12'"),
    ({"key": {"strength": 1.5}}, "key.strength must be in range 0.0..1.0"),
    ({"key": {"pitch_classes": [12]}}, "key.pitch_classes must be in range 0..11"),
])
def test_a_bad_key_names_the_setting(raw, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        config_module.from_dict(raw)


def test_the_strength_cc_turns_the_key_strength():
    from improv.controls import apply_control

    cfg = Config()
    assert apply_control(cfg, cfg.controls.key_strength, 0) == ("key.strength", 0.0)
    assert cfg.key.strength == 0.0
    assert penalty(0.0) == 0.0 and penalty(0.5) == pytest.approx(np.log(0.5)) and penalty(1.0) == -np.inf


def continuation(shipped_model, seed_path, seed, **key):
    config = Config()
    for name, value in key.items():
        setattr(config.key, name, value)
    messages = read_messages(seed_path)
    return continue_performance(shipped_model, config.validate(), messages, 4.0, np.random.default_rng(seed))


@pytest.mark.parametrize("seed_path", sorted(DATA.glob("*.mid")), ids=lambda p: p.stem)
def test_a_key_at_strength_1_keeps_every_note_of_a_continuation_in_it(shipped_model, seed_path):
    for seed in (0, 1, 2):
        free = continuation(shipped_model, seed_path, seed)
        assert {e.pitch % 12 for e in free if e.is_on} - C_MAJOR, "the free continuation was in C major already"
        keyed = continuation(shipped_model, seed_path, seed, name="C:major", strength=1.0)
        ons = [e for e in keyed if e.is_on]
        assert len(ons) >= 5
        assert {e.pitch % 12 for e in ons} <= C_MAJOR, (seed, sorted({e.pitch % 12 for e in ons}))


@pytest.mark.parametrize("seed_path", sorted(DATA.glob("*.mid")), ids=lambda p: p.stem)
def test_strength_0_is_exactly_the_free_output(shipped_model, seed_path):
    for seed in (0, 1):
        assert continuation(shipped_model, seed_path, seed, name="C:major", strength=0.0) == \
            continuation(shipped_model, seed_path, seed)


def test_a_strength_below_1_damps_out_of_key_notes(shipped_model):
    path = DATA / "bach_bwv66.6.mid"  # F# minor: five sharps against C major
    share = {}
    for strength in (0.0, 0.9):
        ons = [e for seed in (0, 1, 2) for e in continuation(shipped_model, path, seed, name="C:major",
                                                              strength=strength) if e.is_on]
        share[strength] = sum(e.pitch % 12 not in C_MAJOR for e in ons) / len(ons)
    assert share[0.9] < share[0.0] / 2, share


def test_auto_follows_the_players_key_and_keeps_improv_in_it():
    vocab = Vocabulary()
    # A model that wants C# (61) and D (62) alike: in C major only D may sound.
    model = ScriptedModel(lambda history: favour(vocab, vocab.note_on(61), vocab.note_on(62), vocab.time_shift(20),
                                                 *(vocab.note_off(p) for p in (61, 62))), vocab)
    config = Config()
    config.key.name, config.engine.silence_ms, config.engine.response_ms = "auto", 200, 2000
    config.memory.attachment = 0.0  # the script alone says what improv wants
    engine = Engine(model, config, 0.0, np.random.default_rng(0))
    assert engine.key() is None and engine.key_status() == "auto ?"
    clock = VirtualClock()
    scale = [60, 62, 64, 65, 67, 69, 71, 72, 67, 64, 60]
    played = [(i * 0.3 + dt, Msg(kind, p, v)) for i, p in enumerate(scale)
              for dt, kind, v in ((0, "note_on", 80), (0.25, "note_off", 0))]
    out = perform(engine, clock, played) + run_until(engine, clock, 8.0) + engine.stop(clock.now())
    assert str(engine.key()) == "C:major" and engine.key_status() == "auto C:major"
    ons = [e.pitch for e in out if e.is_on]
    assert ons and set(ons) == {62}


def heard(events):
    """A detector fed (time, pitch, duration) notes."""
    detector = KeyDetector()
    timeline = sorted([(t, 1, p) for t, p, _ in events] + [(t + d, 0, p) for t, p, d in events])
    for t, on, p in timeline:
        (detector.note_on if on else detector.note_off)(t, p)
    return detector


def test_the_detector_hears_a_modulation_and_forgets_what_came_before():
    c_major = [(i * 0.5, p, 0.4) for i, p in enumerate([60, 64, 67, 65, 62, 59, 60, 67] * 3)]
    assert str(heard(c_major).key) == "C:major"
    a_minor_late = c_major + [(60 + i * 0.5, p, 0.4) for i, p in enumerate([57, 60, 64, 62, 59, 56, 57, 64] * 6)]
    assert str(heard(a_minor_late).key) == "A:minor"


CHORALES = ["bach/bwv66.6", "bach/bwv269", "bach/bwv10.7", "bach/bwv153.1", "bach/bwv86.6", "bach/bwv267",
            "bach/bwv281", "bach/bwv40.8"]


def test_the_detector_agrees_with_music21_on_most_bach_chorales():
    corpus = pytest.importorskip("music21.corpus")
    agree = []
    for name in CHORALES:
        score = corpus.parse(name)
        expected = score.analyze("key")
        notes = [(float(n.offset) * 0.5, p.midi, float(n.quarterLength) * 0.5)
                 for n in score.flatten().notes for p in n.pitches]  # at 120 bpm
        key = heard(notes).key
        tonic = parse_tonic(expected.tonic.name.replace("-", "b"))
        agree.append(key is not None and (key.tonic, key.scale) == (tonic, expected.mode))
    assert sum(agree) >= 6, list(zip(CHORALES, agree))
