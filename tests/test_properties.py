"""Properties of the codec and the schedule for any input (hypothesis)."""

import mido
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from improv.config import Config
from improv.engine import Engine
from improv.events import Decoder, Encoder, Vocabulary, decode_tokens
from reference import reference_notes
from scripted_model import ScriptedModel

VOCAB = Vocabulary()
STEP_S = VOCAB.time_step_ms / 1000


def check_note_events(events, cap_s=None):
    """Times never go back; every note-on gets a note-off; no note outlasts the cap."""
    last, sounding = -1.0, {}
    for event in events:
        assert event.time_s >= last - 1e-9, "time went back"
        last = event.time_s
        if event.is_on:
            assert event.pitch not in sounding
            sounding[event.pitch] = event.time_s
        else:
            onset = sounding.pop(event.pitch)
            if cap_s is not None:
                assert event.time_s - onset <= cap_s + 1e-6
    assert not sounding, "a note-on without its note-off"


@given(st.lists(st.integers(0, VOCAB.size - 1), max_size=400))
def test_decoder_output_is_well_formed_for_any_tokens(tokens):
    decoder = Decoder(VOCAB)
    events = [e for token in tokens for e in decoder.feed(token)] + decoder.release_all()
    check_note_events(events)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, VOCAB.size - 1), max_size=300), st.integers(50, 2000))
def test_the_engine_schedule_caps_every_note_for_any_generated_tokens(tokens, max_note_ms):
    config = Config()
    config.limits.max_note_ms = max_note_ms
    # The tokens are given, not sampled: the model's logits play no part.
    engine = Engine(ScriptedModel(lambda history: np.zeros(VOCAB.size), VOCAB), config, 0.0, np.random.default_rng(0))
    for token in tokens:
        if VOCAB.decode_token(token)[0] not in VOCAB.specials:
            engine.feed_generated(token)
    engine._finish_answer()
    check_note_events([item.event for item in engine.pending], cap_s=max_note_ms / 1000)


messages = st.one_of(
    st.builds(lambda ch, n, v: mido.Message("note_on", channel=ch, note=n, velocity=v),
              st.integers(0, 15), st.integers(0, 127), st.integers(0, 127)),
    st.builds(lambda ch, n: mido.Message("note_off", channel=ch, note=n), st.integers(0, 15), st.integers(0, 127)),
    st.builds(lambda v: mido.Message("control_change", control=64, value=v), st.integers(0, 127)),
    st.builds(lambda c, v: mido.Message("control_change", control=c, value=v), st.integers(0, 127), st.integers(0, 127)),
    st.builds(lambda p: mido.Message("pitchwheel", pitch=p), st.integers(-8192, 8191)),
    st.builds(lambda p: mido.Message("program_change", program=p), st.integers(0, 127)),
)


@given(st.lists(st.tuples(st.integers(12, 3000), messages), max_size=120))
def test_any_message_stream_encodes_without_error_and_decodes_to_the_heard_notes(stream):
    # Messages at least 12 ms apart: closer than one 10 ms step, the order of events on the grid is lost.
    timed, now = [], 0.0
    for gap_ms, msg in stream:
        now += gap_ms / 1000
        timed.append((now, msg))
    encoder = Encoder(VOCAB)
    tokens = [VOCAB.special("START")]
    for time_s, msg in timed:
        tokens += encoder.feed(time_s, msg)
    if timed:
        tokens += encoder.release_all(timed[-1][0])
    decoded = decode_tokens(VOCAB, tokens)
    expected = reference_notes(timed)
    assert len(decoded) == len(expected)
    key = lambda n: (n.onset_s, n.pitch)  # noqa: E731
    for want, got in zip(sorted(expected, key=key), sorted(decoded, key=key)):
        assert got.pitch == want.pitch
        assert abs(got.onset_s - want.onset_s) <= STEP_S and abs(got.offset_s - want.offset_s) <= STEP_S
        assert abs(VOCAB.velocity_to_bin(got.velocity) - VOCAB.velocity_to_bin(want.velocity)) <= 1
