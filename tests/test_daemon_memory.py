"""The daemon's routing, reconnection and releases, through in-memory ports: exact and fast, with no
MIDI server. What only JACK shows (timing, a server that stops) stays in test_daemon.py and friends."""

import logging
import time

import numpy as np
import pytest

from conftest import wait_for
from improv.config import Config
from improv.daemon import PORT_CHECK_S, Daemon
from improv.midi.messages import CC_ALL_NOTES_OFF, CC_SUSTAIN
from improv.tools.probe import note_ons, sounding_after
from memory_midi import MemoryMidi

PHRASE = (60, 64, 67, 72)


def make_config(**sections) -> Config:
    config = Config()
    config.recording.enabled = False
    config.engine.silence_ms, config.engine.response_ms = 100, 600
    config.sampling.seed = 0
    for dotted, value in sections.items():
        section, key = dotted.split("__")
        setattr(getattr(config, section), key, value)
    return config.validate()


@pytest.fixture
def daemon_with(shipped_model):
    started = []

    def start(config: Config, midi: MemoryMidi | None = None, memory=None) -> tuple[Daemon, MemoryMidi]:
        midi = midi or MemoryMidi()
        daemon = Daemon(config, shipped_model, midi, memory=memory).start()
        started.append(daemon)
        return daemon, midi

    yield start
    for daemon in started:
        daemon.stop()
        daemon.wait()


def answered(midi: MemoryMidi, since_s: float, timeout_s: float = 3.0) -> bool:
    return wait_for(lambda: note_ons(midi.received(since_s)), timeout_s)


def test_an_answer_plays_on_the_output_channel_and_stop_releases_every_note(daemon_with):
    daemon, midi = daemon_with(make_config(midi__output_channel=3, engine__response_ms=5000,
                                           limits__max_note_ms=4000))
    last_up = midi.phrase(PHRASE)
    assert answered(midi, last_up)
    assert wait_for(lambda: sounding_after(midi.received()))  # stopped while a note of improv's sounds
    daemon.stop()
    daemon.wait()
    sent = midi.received(last_up)
    assert {m[0] for _, m in note_ons(sent)} == {0x92}
    assert not sounding_after([(t, m) for t, m in sent if m[0] & 0xF0 != 0xB0]), "a note-off is missing"
    assert [0xB2, CC_SUSTAIN, 0] in [m for _, m in sent] and [0xB2, CC_ALL_NOTES_OFF, 0] in [m for _, m in sent]


def test_pass_through_echoes_the_listened_channels_only(daemon_with):
    daemon, midi = daemon_with(make_config(midi__input_channels=[1], midi__pass_through=True,
                                           engine__enabled=False))
    start = midi.play(0x90, 62, 70)
    midi.play(0x91, 63, 70)  # channel 2: not listened to
    midi.play(0x80, 62, 0)
    assert wait_for(lambda: len(midi.received(start)) >= 2)
    time.sleep(0.2)
    assert [m for _, m in midi.received(start)] == [[0x90, 62, 70], [0x80, 62, 0]]
    assert daemon.engine.notes_in == 1


def test_a_phrase_on_an_unlistened_channel_is_not_answered(daemon_with):
    daemon, midi = daemon_with(make_config(midi__input_channels=[1]))
    last_up = midi.phrase(PHRASE, channel=1)
    assert not answered(midi, last_up, timeout_s=1.0)
    last_up = midi.phrase(PHRASE, channel=0)
    assert answered(midi, last_up)


def test_a_panic_releases_improvs_notes_and_ends_the_answer(daemon_with):
    daemon, midi = daemon_with(make_config(engine__response_ms=5000))
    last_up = midi.phrase(PHRASE)
    assert wait_for(lambda: sounding_after(midi.received(last_up)), 3.0), "no note of improv's sounded"
    panic = midi.play(0xB0, CC_ALL_NOTES_OFF, 0)
    assert wait_for(lambda: [0xB0, CC_ALL_NOTES_OFF, 0] in [m for _, m in midi.received(panic)])
    time.sleep(0.5)
    after = midi.received(panic)
    assert not note_ons(after), "improv played on after a panic"
    notes_only = [(t, m) for t, m in midi.received(last_up) if m[0] & 0xF0 != 0xB0]
    assert not sounding_after(notes_only), "a note was left without its note-off"


def test_a_mapped_cc_changes_its_setting_and_a_mode_switch_releases(daemon_with):
    daemon, midi = daemon_with(make_config())
    midi.play(0xB0, 21, 0)
    assert wait_for(lambda: daemon.config.sampling.temperature == 0.1)
    midi.play(0xB0, 23, 127)
    assert wait_for(lambda: daemon.config.engine.mode == "continuous")
    start = midi.play(0x90, 60, 80)
    assert answered(midi, start), "continuous mode did not play along"


def test_malformed_messages_are_counted_and_skipped(daemon_with):
    daemon, midi = daemon_with(make_config())
    midi.play(0x90, 60)  # a note-on cut short
    midi.play(0xF7)  # an end of sysex alone
    assert wait_for(lambda: daemon.counts["malformed"] == 2)
    last_up = midi.phrase(PHRASE)
    assert answered(midi, last_up)


def test_a_lost_input_is_released_and_reconnected_when_it_returns(daemon_with, caplog):
    caplog.set_level(logging.INFO, logger="improv")
    daemon, midi = daemon_with(make_config(midi__input="keys", midi__pass_through=True,
                                           engine__enabled=False))
    midi.play(0x90, 60, 90)  # a passed-through note sounds...
    assert wait_for(lambda: sounding_after(midi.received()) == {60})
    midi.present.discard("keys")  # ...when the keyboard is unplugged
    assert wait_for(lambda: not sounding_after(midi.received()), 2 * PORT_CHECK_S + 1), \
        "the passed-through note was not released"
    assert daemon.input is None
    midi.present.add("keys")
    assert wait_for(lambda: daemon.input is not None, 2 * PORT_CHECK_S + 1)
    start = midi.play(0x90, 61, 90)
    assert wait_for(lambda: note_ons(midi.received(start)))
    assert "went away" in caplog.text and "is back" in caplog.text


def test_a_lost_output_is_forgotten_and_reopened(daemon_with):
    daemon, midi = daemon_with(make_config(midi__output="synth"))
    first = daemon.output
    midi.present.discard("synth")
    assert wait_for(lambda: daemon.output is None, 2 * PORT_CHECK_S + 1)
    assert first.closed
    midi.present.add("synth")
    assert wait_for(lambda: daemon.output is not None, 2 * PORT_CHECK_S + 1)
    last_up = midi.phrase(PHRASE)
    assert answered(midi, last_up), "no answer on the reopened output"


def test_a_server_that_goes_closes_both_ports_and_they_reopen(daemon_with):
    daemon, midi = daemon_with(make_config())
    ports = (daemon.input, daemon.output)
    midi.gone = True
    assert wait_for(lambda: daemon.input is None and daemon.output is None, 2 * PORT_CHECK_S + 1)
    assert all(port.closed for port in ports)
    midi.gone = False
    assert wait_for(lambda: daemon.input is not None and daemon.output is not None, 2 * PORT_CHECK_S + 1)
    last_up = midi.phrase(PHRASE)
    assert answered(midi, last_up)


def test_an_engine_error_releases_improvs_notes_and_listening_goes_on(daemon_with, monkeypatch):
    monkeypatch.setenv("IMPROV_INJECT_FAULT", "engine")
    daemon, midi = daemon_with(make_config(engine__response_ms=5000))
    last_up = midi.phrase(PHRASE)
    assert wait_for(lambda: sounding_after(midi.received(last_up)), 3.0)
    midi.play(0x90, 50, 90)  # the injected fault fires on a player's note during an answer
    midi.play(0x80, 50, 0)
    assert wait_for(lambda: daemon.counts["engine_errors"] == 1)
    notes_only = lambda: [(t, m) for t, m in midi.received(last_up) if m[0] & 0xF0 != 0xB0]  # noqa: E731
    assert wait_for(lambda: not sounding_after(notes_only())), "a note was left without its note-off"
    last_up = midi.phrase(PHRASE)
    assert answered(midi, last_up), "improv stopped listening after the engine error"


def test_the_reset_cc_forgets_the_session(daemon_with):
    daemon, midi = daemon_with(make_config(engine__enabled=False))
    midi.phrase(PHRASE)
    assert wait_for(lambda: daemon.engine.memory.tokens_learned > 0)
    midi.play(0xB0, daemon.config.controls.reset, 0)  # a button let go: nothing
    midi.play(0xB0, 21, 64)  # a later message, to know the first was handled
    assert wait_for(lambda: daemon.config.sampling.temperature != 0.9)
    assert daemon.engine.memory.tokens_learned > 0, "a button's release reset the session"
    midi.play(0xB0, daemon.config.controls.reset, 127)
    assert wait_for(lambda: daemon.engine.memory.tokens_learned == 0)
    assert len(daemon.engine.memory) == 0 and daemon.engine.tokens_fed == 1  # the model is back at START


def test_the_memory_is_saved_beside_the_recording_and_starts_the_next_set(daemon_with, shipped_model, tmp_path):
    from improv.memory import SessionMemory, load_or_empty, memory_path_for

    config = make_config()
    config.recording.enabled, config.recording.folder = True, str(tmp_path)
    daemon, midi = daemon_with(config)
    last_up = midi.phrase(PHRASE)
    assert answered(midi, last_up)
    learned = daemon.engine.memory.tokens_learned
    daemon.stop()
    daemon.wait()
    saved = memory_path_for(daemon.recorder.path)
    vocab = shipped_model.vocab
    warnings = []
    memory = load_or_empty(saved, vocab.to_json(), vocab.size, config.memory.max_contexts, warnings.append)
    assert not warnings and memory.tokens_learned == learned > 0
    np.testing.assert_array_equal(memory.unigram, daemon.engine.memory.unigram)
    # The next set starts from it: improv run --memory FILE hands it to the daemon.
    second, _ = daemon_with(make_config(), memory=memory)
    assert second.engine.memory is memory
    # A file that cannot be used: one line, and an empty memory.
    (tmp_path / "foreign.npz").write_bytes(b"not a memory")
    empty = load_or_empty(tmp_path / "foreign.npz", vocab.to_json(), vocab.size, 1000, warnings.append)
    assert isinstance(empty, SessionMemory) and empty.tokens_learned == 0
    assert len(warnings) == 1 and "is not an improv session memory" in warnings[0]


def test_the_status_line_shows_the_key_detected_from_the_player(daemon_with):
    daemon, midi = daemon_with(make_config(key__name="auto", engine__enabled=False))
    assert "key auto ?" in daemon.status_line()
    midi.phrase([57, 60, 64, 62, 59, 56, 57, 64, 57], note_s=0.03)  # A harmonic minor
    assert wait_for(lambda: "key auto A:minor |" in daemon.status_line()), daemon.status_line()
    daemon.config.key.name = "D:dorian"
    assert "key D:dorian |" in daemon.status_line()


def test_the_answer_cc_answers_at_once_even_with_a_key_held(daemon_with):
    daemon, midi = daemon_with(make_config(engine__silence_ms=10_000, engine__response_ms=3000))
    last_up = midi.phrase(PHRASE)
    assert not answered(midi, last_up, timeout_s=0.5), "answered before the silence"
    asked = midi.play(0xB0, daemon.config.controls.answer, 127)
    assert answered(midi, asked, timeout_s=1.0)
    first = note_ons(midi.received(asked))[0][0]
    assert first - asked < 0.1, f"the answer began {first - asked:.3f} s after the CC"
    midi.play(0xB0, CC_ALL_NOTES_OFF, 0)  # panic ends it
    time.sleep(0.2)
    # A key held when the CC comes: taken as let go; its key-up later does not stop the answer.
    midi.play(0x90, 62, 90)
    asked = midi.play(0xB0, daemon.config.controls.answer, 127)
    assert answered(midi, asked, timeout_s=1.0)
    released = midi.play(0x80, 62, 0)
    assert wait_for(lambda: note_ons(midi.received(released + 0.05)), 2.0), "the key-up stopped the answer"


def test_improvs_own_notes_looped_back_to_its_input_are_not_heard(daemon_with, caplog):
    caplog.set_level(logging.INFO, logger="improv")
    midi = MemoryMidi()
    midi.loopback_s = 0.003  # a DAW monitoring improv's track back into improv's input
    daemon, midi = daemon_with(make_config(engine__response_ms=1500, midi__pass_through=True), midi)
    last_up = midi.phrase(PHRASE)
    assert answered(midi, last_up)
    time.sleep(3.0)
    ons = note_ons(midi.received(last_up))  # improv's: the player's notes passed through came before
    assert ons, "no answer"
    assert daemon.engine.notes_in == len(PHRASE), "improv heard its own notes as the player's"
    assert max(t for t, _ in ons) < last_up + 0.1 + 1.5 + 0.1, "improv answered itself"
    assert not note_ons(midi.received(time.monotonic() - 1.0)), "silence did not return after the answer"
    assert not sounding_after([(t, m) for t, m in midi.received() if m[0] & 0xF0 != 0xB0])
    assert daemon.echoes.count >= 2 * len(ons) and caplog.text.count("coming back on its input") == 1
    assert "echoes" in daemon.status_line()


def test_with_the_feedback_guard_off_improv_hears_itself(daemon_with):
    midi = MemoryMidi()
    midi.loopback_s, midi.loopback_notes_only = 0.003, True  # all of it would loop the panics for ever
    daemon, midi = daemon_with(make_config(engine__response_ms=1500, midi__feedback_guard_ms=0), midi)
    last_up = midi.phrase(PHRASE)
    assert answered(midi, last_up)
    assert wait_for(lambda: daemon.engine.notes_in > len(PHRASE), 3.0)
    midi.loopback_s = None
    midi.play(0xB0, CC_ALL_NOTES_OFF, 0)


@pytest.mark.parametrize("offset_ms", [80, -40, 0])
def test_the_output_offset_moves_every_note_of_improvs_by_that_much(daemon_with, offset_ms):
    daemon, midi = daemon_with(make_config(midi__output_offset_ms=offset_ms, engine__response_ms=800))
    last_up = midi.phrase(PHRASE)
    assert wait_for(lambda: len(note_ons(midi.received(last_up))) >= 3, 3.0)
    midi.play(0xB0, CC_ALL_NOTES_OFF, 0)
    with midi.lock:
        dues = [(sent, due, m) for sent, due, m in midi.dues if sent >= last_up and m[0] & 0xF0 == 0x90 and m[2]]
    sent_s, due_s, _ = dues[0]
    # The answer is due exactly silence_ms after the last key up; it is sent offset_ms from then.
    assert due_s == pytest.approx(last_up + 0.100 + offset_ms / 1000, abs=1e-6)
    for sent_s, due_s, _ in dues:
        assert sent_s <= due_s + 0.03, "handed over late"  # on a loaded machine: a few ms
        if offset_ms > 0:
            assert sent_s >= due_s - 1e-6, "a note held for the offset left before its time"


def test_a_negative_offset_beyond_the_lookahead_is_refused():
    from improv.errors import ConfigError

    with pytest.raises(ConfigError, match=r"midi\.output_offset_ms must be in range -140\.\.1000 with "
                                          r"engine\.lookahead_ms 150"):
        make_config(midi__output_offset_ms=-141)
    make_config(midi__output_offset_ms=-140)


def test_a_panic_drops_the_notes_held_for_a_positive_offset(daemon_with):
    daemon, midi = daemon_with(make_config(midi__output_offset_ms=400, engine__response_ms=3000))
    last_up = midi.phrase(PHRASE)
    assert wait_for(lambda: daemon.held, 2.0), "no note held for the offset"
    panic = midi.play(0xB0, CC_ALL_NOTES_OFF, 0)
    time.sleep(0.8)
    assert not note_ons(midi.received(panic + 0.01)), "a held note went out after the panic"
    assert not sounding_after([(t, m) for t, m in midi.received(last_up) if m[0] & 0xF0 != 0xB0])


EXPRESSION = [[0xE0, 0x00, 0x50],  # pitch bend
              [0xD0, 0x40],  # channel aftertouch
              [0xA0, 60, 0x30],  # poly aftertouch
              [0xB0, 1, 64],  # mod wheel
              [0xB0, 11, 100],  # expression
              [0xC0, 5]]  # program change


def test_pass_through_carries_everything_improv_does_not_use_and_the_take_keeps_it(daemon_with, tmp_path):
    import mido

    config = make_config(midi__pass_through=True, engine__enabled=False)
    config.recording.enabled, config.recording.folder = True, str(tmp_path)
    daemon, midi = daemon_with(config)
    time.sleep(0.1)  # improv's clean slate at start (pedal up...) is not an echo of the player's by then
    start = midi.play(0x90, 60, 90)
    midi.play(0xB0, 64, 127)  # the pedal
    for data in EXPRESSION:
        midi.play(*data)
    midi.play(0xB0, daemon.config.controls.temperature, 64)  # improv's own control: used, not passed on
    midi.play(0x80, 60, 0)
    midi.play(0xB0, 64, 0)
    expected = [[0x90, 60, 90], [0xB0, 64, 127], *EXPRESSION, [0x80, 60, 0], [0xB0, 64, 0]]
    assert wait_for(lambda: len(midi.received(start)) >= len(expected)), str([m for _, m in midi.received(start)])
    time.sleep(0.1)
    assert [m for _, m in midi.received(start)] == expected
    daemon.stop()
    daemon.wait()
    player = mido.MidiFile(daemon.recorder.path).tracks[0]
    recorded = [m.bytes() for m in player if not m.is_meta]
    assert recorded == expected


def test_a_program_change_switches_the_model_live_and_leaves_nothing_sounding(daemon_with, shipped_model, tmp_path):
    from improv.model import default_model_path

    shipped = default_model_path().parent
    for name in ("improv-lstm.int8.onnx", "improv-lstm.onnx"):  # program 0, program 1
        (tmp_path / name).symlink_to(shipped / name)
    daemon, midi = daemon_with(make_config(model__folder=str(tmp_path), engine__response_ms=5000,
                                           limits__max_note_ms=4000))
    assert "model improv-lstm.int8 |" in daemon.status_line()
    last_up = midi.phrase(PHRASE)
    assert wait_for(lambda: sounding_after(midi.received(last_up)), 3.0), "no note of improv's sounded"
    switched = midi.play(0xC0, 1)
    assert wait_for(lambda: daemon.model.path.name == "improv-lstm.onnx", 10.0)
    time.sleep(0.2)
    assert not sounding_after(midi.received(last_up)), "a note was left sounding across the switch"
    assert not note_ons(midi.received(switched)), "the old answer went on after the switch"
    assert [0xC0, 1] not in [m for _, m in midi.received()]  # improv's program change is not passed on
    assert "model improv-lstm |" in daemon.status_line()
    assert daemon.engine.model is daemon.model
    last_up = midi.phrase(PHRASE)
    assert answered(midi, last_up), "the new model did not answer"
    midi.play(0xC0, 7)  # no model of that number: nothing changes
    time.sleep(0.2)
    assert daemon.model.path.name == "improv-lstm.onnx"
