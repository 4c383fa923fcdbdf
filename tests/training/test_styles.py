"""Styles: STYLE tokens appended to the vocabulary, a style per piece (by collection family or
subfolder), fed after START in training windows and live, never generated; a model without styles
still loads, and a bad style name is one error naming the allowed ones."""

import re
from dataclasses import replace

import numpy as np
import pytest

from conftest import CHORALE, EXPRESSIVE
from improv.config import Config
from improv.controls import apply_control
from improv.engine import Engine
from improv.errors import ModelSpecError
from improv.events import Vocabulary, encode_notes, Note
from improv.sampling import MaskBuilder
from scripted_model import ScriptedModel

STYLES = ("chorale", "classical", "folk", "renaissance")


def test_a_vocabulary_with_styles_round_trips_and_keeps_every_other_token_id():
    plain, styled = Vocabulary(), Vocabulary(styles=STYLES)
    assert styled.size == plain.size + 4 and styled.offset("STYLE") == plain.size
    assert [g for g in styled.groups if g[0] != "STYLE"] == list(plain.groups)
    again = Vocabulary.from_json(styled.to_json())
    assert again == styled and again.styles == STYLES
    assert styled.name(styled.style("folk")) == "STYLE_folk" and styled.token_from_name("STYLE_folk") == styled.style("folk")
    # A model without styles keeps the spec it always had (no "styles" key) and reads back without styles.
    assert "styles" not in plain.to_json() and Vocabulary.from_json(plain.to_json()) == plain
    notes = [Note(60, 0.0, 0.5, 80)]
    assert encode_notes(styled, notes, style="folk")[:2] == [styled.special("START"), styled.style("folk")]
    assert encode_notes(styled, notes)[1] != styled.style("folk")


def test_a_bad_style_name_is_one_error_naming_the_allowed_ones():
    with pytest.raises(ModelSpecError, match=r"unknown style 'jazz'; this model's styles: chorale, classical, folk, "
                                             r"renaissance"):
        Vocabulary(styles=STYLES).style("jazz")
    with pytest.raises(ModelSpecError, match=r"unknown style 'folk': this model has no styles"):
        Vocabulary().style("folk")


def test_a_model_without_styles_still_loads_and_runs(tmp_path, shipped_model):
    # A model exported before styles: no STYLE group, no "styles" in its spec; START alone begins a context.
    pytest.importorskip("torch", reason="exporting needs the train extra: pip install '.[train]'")
    from improv.model import VOCAB_KEY, OnnxModel
    from training.export import export_onnx
    from training.model import EventLSTM, ModelConfig

    path = tmp_path / "plain.onnx"
    export_onnx(EventLSTM(ModelConfig(vocab_size=Vocabulary().size, embed_dim=8, hidden=16)).eval(), path,
                {VOCAB_KEY: Vocabulary().to_json()})
    model = OnnxModel(path)
    assert model.vocab.styles == () and model.vocab.size == 390
    config = Config()
    engine = Engine(model, config, 0.0, record_history=True)
    assert engine.style is None and engine.history == [model.vocab.special("START")]
    config.model.style = "folk"
    with pytest.raises(ModelSpecError, match="unknown style 'folk': this model has no styles"):
        Engine(model, config, 0.0)
    # The shipped model has styles; it also plays with none chosen.
    assert Engine(shipped_model, Config(), 0.0).style is None


def _engine(style, record=True):
    vocab = Vocabulary(styles=STYLES)
    favourite = vocab.style("folk")

    def logits_for(history):
        logits = np.zeros(vocab.size, np.float32)
        logits[vocab.offset("STYLE"):] = 50.0  # the model would love to play a style token
        logits[favourite] = 100.0
        return logits

    config = Config()
    config.model.style = style
    return Engine(ScriptedModel(logits_for, vocab), config, 0.0, record_history=record), vocab


def test_the_style_token_is_fed_right_after_start_and_never_generated():
    engine, vocab = _engine("folk")
    assert engine.history[:2] == [vocab.special("START"), vocab.style("folk")]
    mask = MaskBuilder(vocab).build(set(), 8)
    assert not mask[vocab.offset("STYLE"):].any()
    from improv.offline import continue_performance
    from improv.events import Msg

    seed = [(0.0, Msg("note_on", 60, 80)), (0.4, Msg("note_off", 60, 0))]
    continue_performance(engine.model, engine.config, seed, 2.0, np.random.default_rng(0))
    plain, _ = _engine(None)
    assert plain.history == [vocab.special("START")]


def test_each_answer_begins_after_the_pause_and_the_styles_token_again():
    from improv.events import Msg
    from improv.offline import VirtualClock, perform, run_until

    for style in ("folk", None):
        engine, vocab = _engine(style)
        engine.config.memory.learn_own = True  # what improv played is learned too, never a style token
        clock = VirtualClock()
        for at in (0.0, 5.0):  # two phrases, two answers
            perform(engine, clock, [(at, Msg("note_on", 60, 80)), (at + 0.4, Msg("note_off", 60, 0))])
            run_until(engine, clock, at + 4.0)
        styles = [i for i, token in enumerate(engine.history) if vocab.is_style(token)]
        if style is None:
            assert not styles
            continue
        assert len(styles) == 3 and engine.history[styles[0] - 1] == vocab.special("START")
        for i in styles[1:]:  # the pause before the answer, its style, then the answer's notes
            assert vocab.decode_token(engine.history[i - 1])[0] == "TIME_SHIFT"
            assert vocab.decode_token(engine.history[i + 1])[0] in ("NOTE_ON", "VELOCITY")
        learned = engine.memory.unigram
        assert learned[vocab.offset("NOTE_ON") + 60] > 0 and not learned[vocab.offset("STYLE"):].any()


def test_a_style_chosen_live_takes_effect_at_the_next_answer_and_its_cc_sweeps_the_models_styles():
    engine, vocab = _engine(None)
    config = engine.config
    assert config.model.loaded_styles == STYLES
    assert apply_control(config, config.controls.style, 0) == ("model.style", None)
    assert apply_control(config, config.controls.style, 127) == ("model.style", "renaissance")
    assert apply_control(config, config.controls.style, 80) == ("model.style", "folk")
    engine.model.calls.clear()
    engine.on_player(0.0, __import__("improv.events", fromlist=["Msg"]).Msg("note_on", 60, 80))
    engine.on_player(0.3, __import__("improv.events", fromlist=["Msg"]).Msg("note_off", 60, 0))
    engine.poll(2.0)  # the silence has passed: the answer starts, after the context heard again with the style
    primes = [tokens for kind, tokens in engine.model.calls if kind == "prime"]
    assert any(tokens[:2] == (vocab.special("START"), vocab.style("folk")) for tokens in primes), primes
    assert engine.style == "folk"


def test_pieces_get_a_style_by_family_or_subfolder():
    from training.data import style_of

    assert style_of("music21/bach/bwv1.6.mxl") == "chorale"
    assert style_of("music21/palestrina/Agnus_0.krn") == "renaissance"
    assert style_of("music21/ryansMammoth/7thRegimentReel.abc") == "folk"
    assert style_of("music21/joplin/maple_leaf_rag.mxl") == "classical"
    assert style_of("mine/blues/a.mid") == "blues" and style_of("mine/a.mid") == "mine"
    assert style_of("maestro/2004/x.midi") == "maestro"


def test_a_tiny_run_with_styles_puts_the_style_after_start_in_every_window_and_exports_it(tmp_path):
    pytest.importorskip("torch", reason="training needs the train extra: pip install '.[train]'")
    from training import data, export, train

    pieces = [chunk for path in (CHORALE, EXPRESSIVE) for chunk in np.array_split(data.parse_midi(str(path)), 4)]
    starts = np.cumsum([0] + [len(p) for p in pieces]).astype(np.int64)
    ids = [f"mine/{'hymns' if i < 4 else 'songs'}/{i}.mid" for i in range(8)]
    splits = ["train"] * 3 + ["validation"] + ["train"] * 3 + ["test"]
    dataset = data.Dataset(np.concatenate(pieces), starts, ids, splits)
    path = tmp_path / "dataset.npz"
    dataset.save(path)
    loaded = data.Dataset.load(path)
    assert loaded.styles == ["hymns"] * 4 + ["songs"] * 4 and loaded.style_names() == ("hymns", "songs")
    vocab = Vocabulary(styles=loaded.style_names())
    sampler = data.WindowSampler(loaded, "train", vocab, 64, data.Augment(), seed=0)
    windows = sampler.batch(8)
    assert (windows[:, 0] == vocab.special("START")).all()
    assert all(vocab.is_style(int(t)) for t in windows[:, 1])  # a window from mid-piece still hears its style

    config = replace(train.TrainConfig.from_yaml(train.config_path("tiny")), data=str(path),
                     out_dir=str(tmp_path / "run"), epoch_tokens=4096, epochs=1, styles=True,
                     style_answers=0.5)
    best = train.train(config, log=lambda *_: None)
    from training import style_value

    assert style_value.main(["--checkpoint", str(best), "--data", str(path), "--windows", "4"]) == 0
    out = tmp_path / "model" / "styled.onnx"
    assert export.main(["--checkpoint", str(best), "--data", str(path), "--out", str(out)]) == 0
    from improv.model import OnnxModel, model_styles

    assert model_styles(out) == ("hymns", "songs") and OnnxModel(out).vocab.styles == ("hymns", "songs")
    card = out.with_suffix(".md").read_text()
    assert "STYLE 2: hymns, songs" in card and re.search(r"\| player-like, no style token \| 1 \|", card)


def test_windows_shaped_as_answers_score_only_the_answer_after_the_pause_and_the_style_token():
    from training import data

    # Two styles told apart by register: the low one's pitches are 40-51, the high one's 80-91.
    rng = np.random.default_rng(0)
    pieces = []
    for low in (40, 40, 80, 80):
        onsets = np.arange(60) * 0.25
        pieces.append(np.column_stack([low + rng.integers(0, 12, 60), onsets, onsets + 0.2, np.full(60, 80)]))
    starts = np.cumsum([0] + [len(p) for p in pieces]).astype(np.int64)
    dataset = data.Dataset(np.concatenate(pieces).astype(float), starts,
                           ["mine/low/a.mid", "mine/low/b.mid", "mine/high/a.mid", "mine/high/b.mid"], ["train"] * 4)
    vocab = Vocabulary(styles=dataset.style_names())
    sampler = data.WindowSampler(dataset, "train", vocab, 128, None, seed=1, answer_share=1.0)
    windows, first_scored = sampler.batch_scored(24)
    on, shift = vocab.offset("NOTE_ON"), vocab.offset("TIME_SHIFT")
    turns = 0
    for window, first in zip(windows, first_scored):
        style = int(window[1])
        assert vocab.is_style(style) and window[first - 1] == style  # the style again, just before the answer
        assert shift <= window[first - 2] < shift + vocab.time_shift_steps  # after the pause
        heard = [t - on for t in window[2:first] if on <= t < on + 128]
        scored = [t - on for t in window[first:] if on <= t < on + 128]
        own = range(80, 92) if vocab.styles[style - vocab.offset("STYLE")] == "high" else range(40, 52)
        assert scored and all(p in own for p in scored)  # the answer is the window's own style
        turns += all(p not in own for p in heard)  # after another style's phrase, or its own piece's
        assert all(p not in own for p in heard) or all(p in own for p in heard), heard
    assert 0 < turns < len(windows)  # both kinds of answer come
    # Without them, every window is one piece and all of it is scored.
    plain = data.WindowSampler(dataset, "train", vocab, 128, None, seed=1)
    assert not plain.batch_scored(16)[1].any()


def test_improv_run_and_generate_refuse_a_style_the_model_lacks_in_one_line(tmp_path):
    import subprocess
    import sys

    for args in (["run", "--no-record"], ["generate", "--seed", str(CHORALE), "--out", str(tmp_path / "x.mid")]):
        result = subprocess.run([sys.executable, "-m", "improv.cli", *args, "--style", "jazz"], capture_output=True,
                                text=True, timeout=120)
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines() == [result.stderr.strip()]
        assert "unknown style 'jazz'" in result.stderr and "folk" in result.stderr
