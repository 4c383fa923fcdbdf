"""MIDI files in and out, as timed messages and notes for the pure codec.

Files are read through mido. Files improv writes (`improv generate`'s output and the session
recording) are encoded here by one small encoder, TrackWriter: a type-1 file at 480 ticks a beat and
120 bpm, so a tick is 1/960 s, a track name, the tempo on the first track, note-ons and note-offs
with running status, and the end of track.
"""

from __future__ import annotations

import errno
import os
import secrets
import struct
from pathlib import Path
from typing import Iterable, Sequence, Union

import mido

from improv.errors import MidiFileError
from improv.events import Encoder, Note, NoteEvent, Vocabulary, decode_tokens
from improv.midi.messages import DRUM_CHANNEL, NOTE_OFF, NOTE_ON

MIDI_SUFFIXES = (".mid", ".midi")
TICKS_PER_BEAT = 480
FILE_TEMPO = 500_000  # us per beat (120 bpm): files improv writes count seconds, not bars
TICKS_PER_S = TICKS_PER_BEAT * 1_000_000 / FILE_TEMPO  # 960.0
END_OF_TRACK = b"\x00\xff\x2f\x00"  # delta 0, meta 0x2F, length 0
META_TRACK_NAME, META_TEMPO = 0x03, 0x51

Bytes = Union[bytes, bytearray, memoryview]


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


def varlen(value: int) -> bytes:
    """A MIDI variable-length quantity: 7 bits a byte, most significant first, the high bit on all but the last."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def file_header(tracks: int) -> bytes:
    """The MThd chunk of a type-1 file of `tracks` tracks at TICKS_PER_BEAT."""
    return b"MThd" + struct.pack(">IHHH", 6, 1, tracks, TICKS_PER_BEAT)


def track_header(body_bytes: int) -> bytes:
    """The MTrk chunk's header for a track whose events take `body_bytes`, END_OF_TRACK not counted."""
    return b"MTrk" + struct.pack(">I", body_bytes + len(END_OF_TRACK))


class TrackWriter:
    """One track's events, encoded as they come: a track name, the tempo if asked, then notes at
    times in seconds (ticks never go back: an event earlier than the last one is written at the
    same tick). Notes use running status. `body` holds the bytes encoded so far; `take()` hands
    them over and goes on with a fresh buffer (the times and the running status carry on), so a
    writer can encode a track a piece at a time. A note is a few bytearray appends: cheap enough
    for a real-time thread."""

    __slots__ = ("body", "channel", "last_tick", "_status")

    def __init__(self, name: str, channel: int = 0, tempo: bool = False):
        self.body = bytearray()
        self.channel = channel & 0x0F
        self.last_tick = 0
        self._status = -1  # the running status: none yet
        self.meta(META_TRACK_NAME, name.encode("latin-1", errors="replace"))  # mido reads names as latin-1
        if tempo:
            self.meta(META_TEMPO, FILE_TEMPO.to_bytes(3, "big"))

    def meta(self, kind: int, data: bytes) -> None:
        """A meta event at the current tick (it ends the running status)."""
        self.body += b"\x00\xff" + bytes((kind,)) + varlen(len(data)) + data
        self._status = -1

    def _advance(self, time_s: float) -> int:
        """Ticks from the last event to one at `time_s` (never back in time)."""
        tick = round(time_s * TICKS_PER_S) if time_s > 0 else 0
        delta = max(0, tick - self.last_tick)
        self.last_tick += delta
        return delta

    def note(self, time_s: float, pitch: int, velocity: int) -> None:
        """A note-on (velocity > 0) or a note-off (velocity 0) at `time_s` seconds from the track's start."""
        delta = self._advance(time_s)
        status = (NOTE_ON if velocity > 0 else NOTE_OFF) | self.channel
        body = self.body
        if delta < 0x80:
            body.append(delta)
        else:
            body += varlen(delta)
        if status != self._status:
            body.append(status)
            self._status = status
        body.append(pitch & 0x7F)
        body.append(min(velocity, 0x7F) if velocity > 0 else 0)

    def message(self, time_s: float, data) -> None:
        """A channel message (status byte and data bytes, as sent on a port) at `time_s`, moved to the
        track's channel; anything else (system messages) is not written."""
        if not data or not 0x80 <= data[0] < 0xF0:
            return
        delta = self._advance(time_s)
        status = (data[0] & 0xF0) | self.channel
        self.body += varlen(delta)
        if status != self._status:
            self.body.append(status)
            self._status = status
        self.body += bytes(b & 0x7F for b in data[1:])

    def take(self) -> bytearray:
        """The bytes encoded since the last take; the writer goes on into a new buffer."""
        body, self.body = self.body, bytearray()
        return body

    def chunk(self) -> bytes:
        """The whole track as an MTrk chunk, for a writer whose bytes were never taken."""
        return track_header(len(self.body)) + bytes(self.body) + END_OF_TRACK


def encode_track(name: str, events: Iterable[NoteEvent], channel: int = 0, tempo: bool = False) -> bytes:
    """A track's MTrk chunk: its name, the tempo if asked, the events in time order (at one time,
    note-offs before note-ons), the end of track."""
    writer = TrackWriter(name, channel, tempo)
    for event in sorted(events, key=lambda e: (e.time_s, e.velocity > 0)):
        writer.note(event.time_s, event.pitch, event.velocity)
    return writer.chunk()


def replace_file(path: Path, parts: Iterable[Bytes]) -> None:
    """Write `parts` one after the other to a temporary file beside `path`, then rename it over `path`:
    a reader (or a crash) sees the old file or the new one, never half of one. The file gets the
    mode a new file gets (the umask applies). MidiFileError, naming the path, when it cannot be
    written; no temporary file is left behind then."""
    try:
        fd, tmp = _temporary_beside(path)
    except OSError as err:
        raise MidiFileError(f"cannot write {path}: {err.strerror or err}") from err
    try:
        with os.fdopen(fd, "wb") as handle:
            for part in parts:
                handle.write(part)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise MidiFileError(f"cannot write {path}: {err.strerror or err}") from err
        raise


def _temporary_beside(path: Path) -> tuple[int, Path]:
    """A new file `.NAME.<random>.tmp` in `path`'s folder, open for writing (mode 0666 less the umask,
    unlike tempfile.mkstemp's 0600)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no free temporary name beside {path}")


def write_tracks(path: str | os.PathLike, tracks: Sequence[tuple[str, Sequence[NoteEvent]]], channels: Sequence[int] | None = None) -> None:
    """Write named tracks of timed note events as a type-1 file, the tempo on the first; the
    events' channel is `channels[i]` for track i (default: i). Replaces `path` atomically."""
    path = check_output_path(path)
    chunks = [encode_track(name, events, channels[index] if channels else index, tempo=index == 0)
              for index, (name, events) in enumerate(tracks)]
    replace_file(path, [file_header(len(chunks)), *chunks])


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
