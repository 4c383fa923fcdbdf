import json

import mido
import pytest

from improv.errors import ModelSpecError
from improv.events import Decoder, Encoder, Msg, Note, Vocabulary, decode_tokens, encode_notes
from improv.midi.files import encode_file, read_messages

from conftest import CHORALE, EXPRESSIVE
from reference import reference_notes

VOCAB = Vocabulary()


def names(tokens):
    return [VOCAB.name(t) for t in tokens]


def test_layout_is_a_table_of_contiguous_groups():
    assert VOCAB.size == 2 + 128 + 128 + 100 + 32
    end = 0
    for _, offset, size in VOCAB.groups:
        assert offset == end
        end += size
    for token in range(VOCAB.size):
        assert VOCAB.token_from_name(VOCAB.name(token)) == token


def test_spec_round_trips_and_a_foreign_spec_is_refused_with_what_differs():
    assert Vocabulary.from_json(VOCAB.to_json()) == VOCAB
    spec = json.loads(VOCAB.to_json())
    spec["groups"][2][2] = 88  # a NOTE_ON group of 88 keys
    with pytest.raises(ModelSpecError, match="layout"):
        Vocabulary.from_json(json.dumps(spec))
    spec = json.loads(VOCAB.to_json())
    spec["version"] = 99
    with pytest.raises(ModelSpecError, match="version 99"):
        Vocabulary.from_json(json.dumps(spec))
    with pytest.raises(ModelSpecError):
        Vocabulary.from_json("not json")


def test_velocity_bins_round_trip_within_a_bin():
    for velocity in range(1, 128):
        back = VOCAB.bin_to_velocity(VOCAB.velocity_to_bin(velocity))
        assert VOCAB.velocity_to_bin(back) == VOCAB.velocity_to_bin(velocity)


def test_encoder_merges_channels_ignores_drums_and_treats_velocity_zero_as_off():
    encoder = Encoder(VOCAB)
    tokens = encoder.feed(0.0, mido.Message("note_on", note=60, velocity=100, channel=3))
    tokens += encoder.feed(0.0, mido.Message("note_on", note=36, velocity=100, channel=9))  # drum
    tokens += encoder.feed(0.5, mido.Message("note_on", note=60, velocity=0, channel=3))
    tokens += encoder.feed(0.6, mido.Message("pitchwheel", pitch=100))
    assert names(tokens) == ["VELOCITY_24", "NOTE_ON_60", "TIME_SHIFT_50", "NOTE_OFF_60"]


def test_sustain_pedal_holds_note_offs_until_it_lifts():
    encoder = Encoder(VOCAB)
    tokens = encoder.feed(0.0, mido.Message("note_on", note=60, velocity=64))
    tokens += encoder.feed(0.1, mido.Message("control_change", control=64, value=127))
    tokens += encoder.feed(0.2, mido.Message("note_off", note=60))
    assert "NOTE_OFF_60" not in names(tokens)
    tokens += encoder.feed(1.0, mido.Message("control_change", control=64, value=0))
    assert names(tokens)[-2:] == ["TIME_SHIFT_100", "NOTE_OFF_60"]


def test_restrike_under_the_pedal_ends_the_old_note_first():
    encoder = Encoder(VOCAB)
    encoder.feed(0.0, mido.Message("control_change", control=64, value=127))
    encoder.feed(0.0, mido.Message("note_on", note=60, velocity=64))
    encoder.feed(0.1, mido.Message("note_off", note=60))
    tokens = encoder.feed(0.2, mido.Message("note_on", note=60, velocity=64))
    assert names(tokens) == ["TIME_SHIFT_20", "NOTE_OFF_60", "NOTE_ON_60"]


def test_long_gaps_use_several_shifts_or_are_capped_live():
    exact = Encoder(VOCAB)
    assert names(exact.advance_to(2.5)) == ["TIME_SHIFT_100", "TIME_SHIFT_100", "TIME_SHIFT_50"]
    live = Encoder(VOCAB, max_shift_s=1.0)
    assert names(live.advance_to(30.0)) == ["TIME_SHIFT_100"]
    assert names(live.advance_to(30.25)) == ["TIME_SHIFT_25"]  # times after the cap stay exact


def test_decoder_drops_unmatched_note_offs_and_restrikes_sounding_notes():
    decoder = Decoder(VOCAB)
    assert decoder.feed(VOCAB.note_off(60)) == []
    decoder.feed(VOCAB.velocity(20))
    first = decoder.feed(VOCAB.note_on(60))
    decoder.feed(VOCAB.time_shift(10))
    again = decoder.feed(VOCAB.note_on(60))
    assert [e.velocity > 0 for e in first] == [True]
    assert [(round(e.time_s, 3), e.velocity > 0) for e in again] == [(0.1, False), (0.1, True)]
    assert decoder.release_all()[0].pitch == 60 and not decoder.sounding


@pytest.mark.parametrize("path", [CHORALE, EXPRESSIVE], ids=lambda p: p.name)
def test_real_files_round_trip_within_10_ms_and_one_velocity_bin(path):
    expected = reference_notes(read_messages(path))
    decoded = decode_tokens(VOCAB, encode_file(VOCAB, path))
    assert len(decoded) == len(expected) > 100
    key = lambda n: (n.pitch, round(n.onset_s, 2))  # noqa: E731
    for want, got in zip(sorted(expected, key=key), sorted(decoded, key=key)):
        assert got.pitch == want.pitch
        assert abs(got.onset_s - want.onset_s) <= 0.010
        assert abs(got.offset_s - want.offset_s) <= 0.010
        assert abs(VOCAB.velocity_to_bin(got.velocity) - VOCAB.velocity_to_bin(want.velocity)) <= 1


def test_encode_notes_goes_through_the_same_encoder():
    notes = [Note(60, 0.0, 0.5, 90), Note(64, 0.25, 1.0, 70)]
    tokens = encode_notes(VOCAB, notes)
    assert names(tokens)[0] == "START"
    assert decode_tokens(VOCAB, tokens) == [Note(60, 0.0, 0.5, VOCAB.bin_to_velocity(VOCAB.velocity_to_bin(90))),
                                            Note(64, 0.25, 1.0, VOCAB.bin_to_velocity(VOCAB.velocity_to_bin(70)))]


def test_absorb_follows_generated_tokens():
    encoder = Encoder(VOCAB)
    for token in (VOCAB.velocity(10), VOCAB.note_on(60), VOCAB.time_shift(30)):
        encoder.absorb(token)
    assert encoder.sounding == {60} and encoder.velocity_bin == 10 and encoder.cursor_steps == 30
    assert names(encoder.feed(0.5, Msg("note_off", 60, 0))) == ["TIME_SHIFT_20", "NOTE_OFF_60"]
