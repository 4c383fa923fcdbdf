"""Session recording: the player's and improv's notes, two tracks, rewritten safely every few seconds.

The take is kept as encoded MIDI bytes only, never as Python objects: the engine thread encodes each
note into its track's buffer as it is recorded (a few bytearray appends under a lock nobody holds
for long: improv.midi.files.TrackWriter), so memory grows with the file and no faster. A recorder
thread takes what the buffers hold every `flush_s` seconds (a swap of buffers, not a copy, under
the lock) and writes the whole file as a temporary file, then a rename; the engine thread never
touches a file. A crash loses at most `flush_s` seconds.
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
from pathlib import Path

from improv.errors import MidiFileError, RecordingError
from improv.events import NoteEvent
from improv.midi.files import END_OF_TRACK, TrackWriter, file_header, replace_file, track_header
from improv.paths import default_sessions_dir

log = logging.getLogger("improv")

BLOCK_BYTES = 256 * 1024  # a track's written bytes are kept in blocks of about this size (see _Take)


class _Take:
    """One track of the take: a TrackWriter the engine thread encodes into, and the bytes taken from
    it so far as a list of immutable blocks that only the flushing thread reads and changes. Small
    takes are joined into the last block until it reaches BLOCK_BYTES, so a long take is a few
    blocks, each copied a bounded number of times."""

    def __init__(self, name: str, channel: int, tempo: bool):
        self.writer = TrackWriter(name, channel, tempo)
        self.blocks: list[bytes] = []
        self.size = 0  # the bytes taken: those in the blocks once kept

    def take(self) -> bytearray:
        """What the writer encoded since the last take (called under the recorder's lock)."""
        fresh = self.writer.take()
        self.size += len(fresh)
        return fresh

    def keep(self, fresh: bytearray) -> bool:
        """Add bytes taken from the writer to the blocks; False if there were none."""
        if not fresh:
            return False
        if self.blocks and len(self.blocks[-1]) < BLOCK_BYTES:
            self.blocks[-1] += fresh  # bytes + bytearray: a new exact-size bytes object
        else:
            self.blocks.append(bytes(fresh))  # exact size: the writer's buffer may be over-allocated
        return True

    def parts(self) -> list[bytes]:
        return [track_header(self.size), *self.blocks, END_OF_TRACK]


def prepare_folder(folder: str | Path | None) -> Path:
    """The recording folder, created if missing; RecordingError if it cannot be made or written."""
    folder = Path(folder).expanduser() if folder is not None else default_sessions_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RecordingError(f"recording.folder {folder} cannot be created ({err.strerror or err}); set "
                             f"recording.folder to a folder you can write, or run with --no-record") from err
    if not os.access(folder, os.W_OK):
        raise RecordingError(f"recording.folder {folder} is not writable; set recording.folder to a folder you "
                             f"can write, or run with --no-record")
    return folder


class SessionRecorder:
    """Records a session to `folder`/improv-session-<date>-<time>.mid; `start()` starts the thread
    that rewrites it every `flush_s` seconds, `close()` stops it and writes the file a last time.
    `player()` and `improv()` may be called from one thread (the engine's) while the file is being
    written from another."""

    def __init__(self, folder: str | Path | None, flush_s: float, start_s: float, output_channel: int = 0):
        self.folder = prepare_folder(folder)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.path = self.folder / f"improv-session-{stamp}.mid"
        self.flush_s, self.start_s = flush_s, start_s
        self._player = _Take("player", 0, tempo=True)
        self._improv = _Take("improv", output_channel, tempo=False)
        self._player_note = self._player.writer.note
        self._improv_note = self._improv.writer.note
        self._unwritten = True  # the file lacks some of what was taken (or was never written)
        self._lock = threading.Lock()  # the writers' buffers: appends (engine thread) against takes (flush)
        self._flush_lock = threading.Lock()  # the recorder thread and close() may both flush
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="improv-recorder", daemon=True)

    def start(self) -> "SessionRecorder":
        self._thread.start()
        return self

    def player(self, time_s: float, pitch: int, velocity: int) -> None:
        """A note-on (velocity > 0) or note-off the player played at `time_s` (the daemon's clock)."""
        with self._lock:
            self._player_note(time_s - self.start_s, pitch, velocity)

    def player_message(self, time_s: float, data) -> None:
        """Any other channel message the player sent (pedal, pitch bend, aftertouch, a controller,
        a program change), on the player's track."""
        with self._lock:
            self._player.writer.message(time_s - self.start_s, data)

    def improv(self, event: NoteEvent, time_s: float) -> None:
        """A note improv sent at `time_s` (the daemon's clock)."""
        with self._lock:
            self._improv_note(time_s - self.start_s, event.pitch, event.velocity)

    @property
    def encoded_bytes(self) -> int:
        """The take's bytes so far, as the file will hold them once written (its size)."""
        with self._lock:
            taken = sum(take.size + len(take.writer.body) for take in (self._player, self._improv))
        return len(file_header(2)) + 2 * (len(track_header(0)) + len(END_OF_TRACK)) + taken

    def flush(self) -> None:
        """Write the take if the file lacks any of it (or is missing)."""
        with self._flush_lock:
            with self._lock:  # a swap of buffers: the engine thread waits for nothing more
                fresh = [self._player.take(), self._improv.take()]
            for take, new in zip((self._player, self._improv), fresh):
                if take.keep(new):
                    self._unwritten = True
            if not self._unwritten and self.path.exists():
                return
            try:
                replace_file(self.path, [file_header(2), *self._player.parts(), *self._improv.parts()])
                self._unwritten = False
            except MidiFileError as err:  # kept: the next flush writes it all again
                log.error("cannot write the session recording: %s", err)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.flush()
