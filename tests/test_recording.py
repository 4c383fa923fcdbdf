import mido

from improv.events import NoteEvent
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
