"""MIDI files in and out (mido), as timed messages and notes for the pure codec."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import mido

from improv.errors import MidiFileError
from improv.events import DRUM_CHANNEL, Encoder, Note, NoteEvent, Vocabulary, decode_tokens

MIDI_SUFFIXES = (".mid", ".midi")
TICKS_PER_BEAT = 480
FILE_TEMPO = 500_000  # us per beat (120 bpm): files improv writes count seconds, not bars


def read_messages(path: str | os.PathLike) -> list[tuple[float, mido.Message]]:
    """All channel messages of a file, tracks merged, with absolute times in seconds.

    Raises MidiFileError when the file is not MIDI or holds no pitched note.
    """
    path = Path(path)
    try:
        midi = mido.MidiFile(path, clip=True)
        timed, now = [], 0.0
        for msg in midi:  # merged tracks; msg.time is the delta in seconds (tempo map applied)
            now += msg.time
            if not msg.is_meta:
                timed.append((now, msg))
    except FileNotFoundError as err:
        raise MidiFileError(f"{path}: no such file") from err
    except (OSError, EOFError, ValueError, KeyError, IndexError) as err:
        raise MidiFileError(f"{path} is not a readable MIDI file ({err}); give a Standard MIDI File (.mid)") from err
    pitched = [m for _, m in timed if m.type == "note_on" and m.velocity > 0 and m.channel != DRUM_CHANNEL]
    if not pitched:
        what = "only drums" if any(m.type == "note_on" for _, m in timed) else "no notes"
        raise MidiFileError(f"{path} has {what}: improv needs pitched notes (channels other than 10)")
    return timed


def encode_messages(vocab: Vocabulary, timed: Iterable[tuple[float, object]], start_token: bool = True) -> list[int]:
    encoder = Encoder(vocab)
    tokens = [vocab.special("START")] if start_token else []
    last = 0.0
    for time_s, msg in timed:
        tokens += encoder.feed(time_s, msg)
        last = time_s
    tokens += encoder.release_all(last)
    return tokens


def encode_file(vocab: Vocabulary, path: str | os.PathLike, start_token: bool = True) -> list[int]:
    return encode_messages(vocab, read_messages(path), start_token)


def read_notes(vocab: Vocabulary, path: str | os.PathLike) -> list[Note]:
    """Notes as the model hears them (pedal applied, channels merged, times on the grid)."""
    return decode_tokens(vocab, encode_file(vocab, path))


def write_tracks(path: str | os.PathLike, tracks: Sequence[tuple[str, Sequence[NoteEvent]]], channels: Sequence[int] | None = None) -> None:
    """Write named tracks of timed note events as a type-1 file; replaces `path` atomically."""
    midi = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    for index, (name, events) in enumerate(tracks):
        channel = channels[index] if channels else index
        track = mido.MidiTrack()
        track.append(mido.MetaMessage("track_name", name=name, time=0))
        if index == 0:
            track.append(mido.MetaMessage("set_tempo", tempo=FILE_TEMPO, time=0))
        last_tick = 0
        for event in sorted(events, key=lambda e: (e.time_s, e.velocity > 0)):
            tick = max(last_tick, round(mido.second2tick(max(event.time_s, 0.0), TICKS_PER_BEAT, FILE_TEMPO)))
            kind = "note_on" if event.velocity > 0 else "note_off"
            track.append(mido.Message(kind, note=event.pitch, velocity=event.velocity, channel=channel, time=tick - last_tick))
            last_tick = tick
        track.append(mido.MetaMessage("end_of_track", time=0))
        midi.tracks.append(track)
    path = check_output_path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise MidiFileError(f"cannot write {path}: {err.strerror or err}") from err
    try:
        with os.fdopen(fd, "wb") as handle:
            midi.save(file=handle)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise MidiFileError(f"cannot write {path}: {err.strerror or err}") from err
        raise


def check_output_path(path: str | os.PathLike) -> Path:
    """A path a MIDI file can be written to, checked before any work is done for it."""
    path = Path(path)
    if path.is_dir():
        raise MidiFileError(f"{path} is a folder; give a file name to write, e.g. {path / 'out.mid'}")
    parent = path.parent
    if not parent.is_dir():
        raise MidiFileError(f"cannot write {path}: the folder {parent} does not exist; create it first or "
                            f"write elsewhere")
    if not os.access(parent, os.W_OK):
        raise MidiFileError(f"cannot write {path}: the folder {parent} is not writable")
    return path
