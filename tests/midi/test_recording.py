import random
import re
import threading
import tracemalloc

import mido
import pytest

from improv.errors import MidiFileError
from improv.events import NoteEvent
from improv.midi.files import write_tracks
from improv.midi.recording import SessionRecorder


def test_recording_is_a_valid_two_track_file_after_every_flush(tmp_path):
    recorder = SessionRecorder(tmp_path / "sessions", flush_s=60, start_s=100.0, output_channel=2)
    recorder.player(100.5, 60, 90)
    recorder.player(101.0, 60, 0)
    recorder.flush()
    first = mido.MidiFile(recorder.path)
    assert [m.type for m in first.tracks[0] if not m.is_meta] == ["note_on", "note_off"]
    recorder.improv(NoteEvent(0, 64, 70), 101.2)
    recorder.improv(NoteEvent(0, 64, 0), 101.7)
    recorder.close()
    midi = mido.MidiFile(recorder.path)
    names = [next(m.name for m in t if m.type == "track_name") for t in midi.tracks]
    assert names == ["player", "improv"]
    improv_notes = [m for m in midi.tracks[1] if not m.is_meta]
    assert [(m.type, m.note, m.channel) for m in improv_notes] == [("note_on", 64, 2), ("note_off", 64, 2)]
    times = [(t, m) for t, m in _absolute(midi) if not m.is_meta]
    assert [round(t, 3) for t, _ in times] == [0.5, 1.0, 1.2, 1.7]
    assert not list(tmp_path.glob("sessions/.*.tmp"))


def _absolute(midi):
    now = 0.0
    for msg in midi:
        now += msg.time
        yield now, msg


TICK_S = 1 / 960  # files improv writes: 480 ticks a beat at 120 bpm


def _recorded_notes(path):
    """(track index, absolute time s, type, note, velocity, channel) of every note message, per track."""
    midi = mido.MidiFile(path)
    tempo = next(m.tempo for m in midi.tracks[0] if m.type == "set_tempo")
    notes = []
    for index, track in enumerate(midi.tracks):
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type in ("note_on", "note_off"):
                seconds = mido.tick2second(tick, midi.ticks_per_beat, tempo)
                notes.append((index, seconds, msg.type, msg.note, msg.velocity, msg.channel))
    return notes


def _take(count, seed=0, start_s=100.0):
    """A take on the engine's clock: player notes and improv notes interleaved, times never going back,
    some at the same instant, some after long pauses (multi-byte deltas)."""
    rng = random.Random(seed)
    now, take = start_s, []
    for i in range(count):
        now += rng.choice([0.0, 0.0004, rng.uniform(0.001, 0.3), rng.uniform(1.0, 40.0) if rng.random() < 0.02 else 0.01])
        velocity = rng.choice([0, rng.randrange(1, 128)])
        take.append(("player" if rng.random() < 0.6 else "improv", now, rng.randrange(128), velocity))
    return take


def _record(recorder, take):
    for who, now, pitch, velocity in take:
        if who == "player":
            recorder.player(now, pitch, velocity)
        else:
            recorder.improv(NoteEvent(0.0, pitch, velocity), now)


def test_a_take_read_back_with_mido_holds_exactly_the_notes_recorded(tmp_path):
    recorder = SessionRecorder(tmp_path, flush_s=60, start_s=100.0, output_channel=5)
    take = _take(3000)
    for part in range(3):  # written in pieces, as the recorder thread does
        _record(recorder, take[part * 1000 : (part + 1) * 1000])
        recorder.flush()
    recorder.close()
    got = _recorded_notes(recorder.path)
    want = [(0 if who == "player" else 1, now - 100.0, pitch, velocity) for who, now, pitch, velocity in take]
    want.sort(key=lambda note: note[0])  # stable: each track in the order recorded
    assert len(got) == len(want)
    for (track, seconds, kind, pitch, velocity, channel), (want_track, want_s, want_pitch, want_velocity) in zip(got, want):
        assert (track, pitch, velocity) == (want_track, want_pitch, want_velocity)
        assert kind == ("note_on" if want_velocity else "note_off")
        assert channel == (0 if track == 0 else 5)
        assert abs(seconds - want_s) <= TICK_S
    assert recorder.path.stat().st_size == recorder.encoded_bytes


def test_recording_keeps_no_more_memory_than_the_bytes_it_encodes(tmp_path):
    # The take is held as encoded bytes, not Python objects: 50,000 events as NoteEvent tuples took
    # some 105 bytes each, 26 times the 4 bytes each encodes to (this test failed on that design).
    count = 50_000
    recorder = SessionRecorder(tmp_path, flush_s=60, start_s=0.0)
    improv_note = NoteEvent(0.0, 64, 70)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            now = i * 0.003
            if i % 4 < 2:
                recorder.player(now, 48 + i % 24, 90 if i % 2 == 0 else 0)
            else:
                recorder.improv(improv_note, now)
        recorded = tracemalloc.get_traced_memory()[0] - before
        recorder.flush()
        flushed = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    encoded = recorder.path.stat().st_size
    assert encoded >= 3 * count
    assert recorded <= 2 * encoded + 16_384, f"{recorded} bytes held for {encoded} bytes encoded"
    assert flushed <= 2 * encoded + 16_384, f"{flushed} bytes held after a flush of {encoded} bytes"
    recorder.close()


def test_notes_recorded_while_the_file_is_written_are_all_kept(tmp_path):
    recorder = SessionRecorder(tmp_path, flush_s=0.001, start_s=0.0).start()
    take = _take(20_000, seed=1, start_s=0.0)
    engine = threading.Thread(target=_record, args=(recorder, take))
    engine.start()
    while engine.is_alive():
        recorder.flush()  # besides the recorder thread's own
    engine.join()
    recorder.close()
    got = _recorded_notes(recorder.path)
    assert [(track, pitch, velocity) for track, _, _, pitch, velocity, _ in got] == sorted(
        ((0 if who == "player" else 1, pitch, velocity) for who, _, pitch, velocity in take), key=lambda n: n[0])
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_failed_write_is_written_again_even_with_no_new_notes(tmp_path, monkeypatch):
    import improv.midi.recording as recording

    recorder = SessionRecorder(tmp_path, flush_s=60, start_s=0.0)
    recorder.flush()
    recorder.player(1.0, 60, 80)
    real = recording.replace_file

    def disk_full(path, parts):
        raise MidiFileError(f"cannot write {path}: No space left on device")

    monkeypatch.setattr(recording, "replace_file", disk_full)
    recorder.flush()
    monkeypatch.setattr(recording, "replace_file", real)
    recorder.close()  # nothing new since the failed write: the take is written anyway
    assert [(m.type, m.note) for m in mido.MidiFile(recorder.path).tracks[0] if not m.is_meta] == [("note_on", 60)]


def test_write_tracks_writes_named_tracks_in_time_order_with_the_tempo_on_the_first(tmp_path):
    path = tmp_path / "out.mid"
    write_tracks(path, [("seed", [NoteEvent(0.5, 60, 0), NoteEvent(0.0, 60, 90), NoteEvent(0.5, 62, 80)]),
                        ("answer", [NoteEvent(1.25, 67, 70), NoteEvent(2.0, 67, 0)])], channels=[0, 3])
    midi = mido.MidiFile(path)
    assert midi.type == 1 and midi.ticks_per_beat == 480 and len(midi.tracks) == 2
    assert [m.type for m in midi.tracks[0] if m.is_meta] == ["track_name", "set_tempo", "end_of_track"]
    assert [m.type for m in midi.tracks[1] if m.is_meta] == ["track_name", "end_of_track"]
    notes = [(round(t, 4), m.type, m.note, m.channel) for t, m in _absolute(midi) if not m.is_meta]
    assert notes == [(0.0, "note_on", 60, 0), (0.5, "note_off", 60, 0), (0.5, "note_on", 62, 0),
                     (1.25, "note_on", 67, 3), (2.0, "note_off", 67, 3)]
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(MidiFileError, match=re.escape(str(tmp_path / "missing"))):
        write_tracks(tmp_path / "missing" / "out.mid", [("seed", [])])
