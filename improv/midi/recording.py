"""Session recording: the player's and improv's notes, two tracks, rewritten safely every few seconds.

The engine thread only appends events to lists; a recorder thread encodes the new ones into each
track's bytes (so a flush costs what arrived since the last one, not the whole session) and writes
the file as a temporary file, then a rename. A crash loses at most `flush_s` seconds.
"""

from __future__ import annotations

import datetime
import logging
import os
import struct
import threading
from pathlib import Path

from improv.errors import RecordingError
from improv.events import NoteEvent
from improv.paths import default_sessions_dir

log = logging.getLogger("improv")

TICKS_PER_BEAT = 480
TEMPO_US = 500_000  # 120 bpm: 960 ticks a second
TICKS_PER_S = TICKS_PER_BEAT * 1_000_000 / TEMPO_US
END_OF_TRACK = b"\x00\xff\x2f\x00"


def _varlen(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


class _Track:
    """One track's bytes, grown as events arrive."""

    def __init__(self, name: str, channel: int, tempo: bool):
        encoded = name.encode("utf-8")[:120]
        self.body = bytearray(b"\x00\xff\x03" + _varlen(len(encoded)) + encoded)
        if tempo:
            self.body += b"\x00\xff\x51\x03" + TEMPO_US.to_bytes(3, "big")
        self.channel, self.last_tick, self.encoded = channel, 0, 0

    def add(self, events: list[NoteEvent]) -> None:
        for event in events:
            tick = max(self.last_tick, round(max(event.time_s, 0.0) * TICKS_PER_S))
            status = (0x90 if event.velocity > 0 else 0x80) | self.channel
            self.body += _varlen(tick - self.last_tick) + bytes((status, event.pitch & 0x7F, event.velocity & 0x7F))
            self.last_tick = tick

    def chunk(self) -> bytes:
        return b"MTrk" + struct.pack(">I", len(self.body) + len(END_OF_TRACK)) + bytes(self.body) + END_OF_TRACK


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
    def __init__(self, folder: str | Path | None, flush_s: float, start_s: float, output_channel: int = 0):
        self.folder = prepare_folder(folder)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.path = self.folder / f"improv-session-{stamp}.mid"
        self.flush_s, self.start_s = flush_s, start_s
        self.player_events: list[NoteEvent] = []
        self.improv_events: list[NoteEvent] = []
        self._tracks = [_Track("player", 0, tempo=True), _Track("improv", output_channel, tempo=False)]
        self._flush_lock = threading.Lock()  # the recorder thread and close() may both flush
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="improv-recorder", daemon=True)

    def start(self) -> "SessionRecorder":
        self._thread.start()
        return self

    def player(self, time_s: float, pitch: int, velocity: int) -> None:
        self.player_events.append(NoteEvent(time_s - self.start_s, pitch, velocity))

    def improv(self, event: NoteEvent, time_s: float) -> None:
        self.improv_events.append(NoteEvent(time_s - self.start_s, event.pitch, event.velocity))

    def flush(self) -> None:
        with self._flush_lock:
            grew = False
            for track, events in zip(self._tracks, (self.player_events, self.improv_events)):
                count = len(events)  # appends after this are taken next time
                if count > track.encoded:
                    track.add(events[track.encoded : count])
                    track.encoded, grew = count, True
            if not grew and self.path.exists():
                return
            header = b"MThd" + struct.pack(">IHHH", 6, 1, len(self._tracks), TICKS_PER_BEAT)
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            try:
                tmp.write_bytes(header + b"".join(track.chunk() for track in self._tracks))
                os.replace(tmp, self.path)
            except OSError as err:
                log.error("cannot write the session recording %s: %s", self.path, err)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.flush()
