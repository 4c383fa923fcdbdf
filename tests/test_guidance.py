"""Style guidance on the shipped model: the logits are plain + strength * (styled - plain), where the
styled context heard the style token and the plain one did not, each checked against its own one-row
run of the model; the strength is heard at once; rollback brings the guided state back exactly; and
at the default strength a style takes the continuation of a seed of another style towards its own pieces."""

from __future__ import annotations

import numpy as np
import pytest

from improv.config import DEFAULT_STYLE_STRENGTH, Config
from improv.events import Msg
from improv.guidance import StyleGuidance
from improv.model import SHIPPED_DIR, OnnxModel, default_model_path, open_stepped
from improv.musicstats import note_stats
from improv.offline import continue_performance

# The float model: int8's dynamic quantization scales activations over the whole call, so its two-row
# step and its one-row runs differ by a rounding (up to 0.1 in a logit); float differs by float's.
FLOAT_MODEL = SHIPPED_DIR / "improv-lstm.onnx"
PHRASE = ["TIME_SHIFT_20", "VELOCITY_20", "NOTE_ON_60", "TIME_SHIFT_30", "NOTE_OFF_60", "NOTE_ON_64",
          "TIME_SHIFT_30", "NOTE_OFF_64", "NOTE_ON_67", "TIME_SHIFT_40", "NOTE_OFF_67"]


@pytest.fixture(scope="module")
def rows():
    """A guided model at a strength a test can turn, and a one-row model to check it against."""
    strength = {"value": 3.0}
    guided = open_stepped(FLOAT_MODEL, lambda: strength["value"])
    assert isinstance(guided, StyleGuidance) and guided.vocab.styles
    return guided, OnnxModel(FLOAT_MODEL), strength


def _begin(guided: StyleGuidance, style: str | None, strength: dict, value: float) -> list[int]:
    """A new context under `style` at strength `value`, as the engine begins one; the phrase's tokens."""
    strength["value"] = value
    guided.reset()
    guided.prime(guided.vocab.context_start(style))
    return [guided.vocab.token_from_name(name) for name in PHRASE]


def _expected(single: OnnxModel, tokens: list[int], style: int, strength: float) -> np.ndarray:
    start = single.vocab.special("START")
    styled = single.run(np.array([[start, style, *tokens]]))[0][0, 1:]  # after the style token, then each token
    plain = single.run(np.array([[start, *tokens]]))[0][0]  # after START, then each token
    return plain + strength * (styled - plain)


def test_guided_logits_are_plain_plus_strength_times_the_styles_difference(rows):
    guided, single, strength = rows
    vocab = guided.vocab
    tokens = [vocab.token_from_name(name) for name in PHRASE]
    for style_name in vocab.styles:
        style = vocab.style(style_name)
        expected = _expected(single, tokens, style, strength["value"])
        guided.reset()
        got = [guided.prime(vocab.context_start(style_name))[-1].copy()]  # as the engine begins a context
        got.append(guided.prime(tokens[:3])[-1].copy())  # a heard note: one bound call of three tokens
        got += [guided.step(t).copy() for t in tokens[3:]]  # generated tokens: one step each
        np.testing.assert_allclose(got[0], expected[0], atol=1e-4)
        np.testing.assert_allclose(got[1], expected[3], atol=1e-4)
        np.testing.assert_allclose(np.array(got[2:]), expected[4:], atol=1e-4)


def test_the_styles_token_before_an_answer_is_heard_by_the_styled_context_alone(rows):
    guided, single, strength = rows
    vocab = guided.vocab
    tokens = _begin(guided, "folk", strength, 3.0)
    pause, folk, start = vocab.token_from_name("TIME_SHIFT_50"), vocab.style("folk"), vocab.special("START")
    heard = tokens[:5]
    guided.prime(heard)
    checkpoint = guided.snapshot()
    styled = single.run(np.array([[start, folk, *heard, pause, folk]]))[0][0, -1]
    plain = single.run(np.array([[start, *heard, pause]]))[0][0, -1]
    expected = plain + 3.0 * (styled - plain)
    np.testing.assert_allclose(guided.prime([pause, folk])[-1], expected, atol=1e-4)  # as the engine feeds them
    guided.restore(checkpoint)
    guided.step(pause)
    np.testing.assert_allclose(guided.step(folk), expected, atol=1e-4)  # or the style token alone, after the pause
    after = single.run(np.array([[start, folk, *heard, pause, folk, tokens[5]]]))[0][0, -1]
    plain_after = single.run(np.array([[start, *heard, pause, tokens[5]]]))[0][0, -1]
    np.testing.assert_allclose(guided.step(tokens[5]), plain_after + 3.0 * (after - plain_after), atol=1e-4)


def test_strength_one_is_the_model_as_trained_and_no_style_is_the_plain_model(rows):
    guided, single, strength = rows
    vocab = guided.vocab
    tokens = _begin(guided, "folk", strength, 1.0)
    got = np.array([guided.step(t).copy() for t in tokens])
    as_trained = single.run(np.array([[*vocab.context_start("folk"), *tokens]]))[0][0, 2:]
    np.testing.assert_allclose(got, as_trained, atol=1e-4)
    _begin(guided, None, strength, 5.0)  # no style chosen: nothing to steer by, whatever the strength
    got = np.array([guided.step(t).copy() for t in tokens])
    np.testing.assert_allclose(got, single.run(np.array([[vocab.special("START"), *tokens]]))[0][0, 1:], atol=1e-4)


def test_a_strength_turned_live_is_heard_at_the_next_token_and_rollback_is_exact(rows):
    guided, _, strength = rows
    tokens = _begin(guided, "chorale", strength, 2.0)
    checkpoint = guided.snapshot()
    at_two = guided.step(tokens[0]).copy()
    after = [guided.step(t).copy() for t in tokens[1:4]]  # generated, then dropped by a rollback
    guided.restore(checkpoint)
    np.testing.assert_array_equal(guided.step(tokens[0]), at_two)
    np.testing.assert_allclose(np.array([guided.step(t).copy() for t in tokens[1:4]]), np.array(after), atol=1e-6)
    guided.restore(checkpoint)
    strength["value"] = 6.0
    at_six = guided.step(tokens[0]).copy()
    # The same two rows at strengths 6, 2 and 1: plain + 6 d, plain + 2 d and plain + d.
    guided.restore(checkpoint)
    strength["value"] = 1.0
    as_trained = guided.step(tokens[0]).copy()
    np.testing.assert_allclose(at_six - at_two, 4.0 * (at_two - as_trained), atol=1e-4)
    assert np.abs(at_six - at_two).max() > 0.1


def test_a_model_without_styles_is_stepped_as_it_is(tmp_path):
    pytest.importorskip("torch", reason="exporting needs the train extra: pip install '.[train]'")
    from improv.events import Vocabulary
    from improv.model import VOCAB_KEY
    from training.export import export_onnx
    from training.model import EventLSTM, ModelConfig

    path = tmp_path / "plain.onnx"
    export_onnx(EventLSTM(ModelConfig(vocab_size=Vocabulary().size, embed_dim=8, hidden=16)).eval(), path,
                {VOCAB_KEY: Vocabulary().to_json()})
    model = open_stepped(path, lambda: DEFAULT_STYLE_STRENGTH)
    assert isinstance(model, OnnxModel) and model.rows == 1


def _a_folk_line(model: StyleGuidance, style: str | None, strength: float, seed, random_seed: int) -> bool:
    """Whether improv's continuation is a folk tune's line: one note at a time, high up (the folk pieces'
    median pitch is 72, ten semitones above the chorales'; docs/development.md, "Styles")."""
    config = Config()
    config.model.style, config.model.style_strength, config.memory.attachment = style, strength, 0.0
    model.strength = lambda: config.model.style_strength
    events = continue_performance(model, config, seed, 12.0, np.random.default_rng(random_seed))
    answer = [e for e in events if e.time_s > seed[-1][0]]
    onsets = {round(e.time_s, 2) for e in answer if e.is_on}
    stats = note_stats(answer)
    return bool(stats["notes"]) and stats["notes"] <= 1.2 * len(onsets) and stats["median_pitch"] >= 70


def test_folk_at_the_default_strength_answers_a_chorale_with_a_single_line_high_up():
    seed = []  # four chords, as a chorale begins
    for i, (pitches, length) in enumerate([((48, 55, 64, 72), 0.6), ((53, 57, 65, 72), 0.6), ((55, 59, 67, 74), 0.6),
                                           ((48, 55, 64, 72), 1.2)]):
        at = 0.6 * i
        seed += [(at, Msg("note_on", p, 80)) for p in pitches] + [(at + length - 0.05, Msg("note_off", p, 0)) for p in pitches]
    seed.sort(key=lambda m: m[0])
    model = open_stepped(default_model_path(), lambda: DEFAULT_STYLE_STRENGTH)
    as_folk = [_a_folk_line(model, "folk", DEFAULT_STYLE_STRENGTH, seed, k) for k in range(6)]
    unstyled = [_a_folk_line(model, None, DEFAULT_STYLE_STRENGTH, seed, k) for k in range(6)]
    assert sum(as_folk) >= 5 and sum(unstyled) <= 2, (as_folk, unstyled)
