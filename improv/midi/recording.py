"""Session recording: the player's and improv's notes, two tracks, rewritten safely every few seconds.

The take is kept as encoded MIDI bytes only, never as Python objects: the engine thread encodes each
note into its track's buffer as it is recorded (a few bytearray appends under a lock nobody holds
for long: improv.midi.files.TrackWriter), so memory grows with the file and no faster. A recorder
thread takes what the buffers hold every `flush_s` seconds (a swap of buffers, not a copy, under
the lock) and writes the whole file as a temporary file, then a rename; the engine thread never
touches a file. A crash loses at most `flush_s` seconds.

**Tempo and meter.** When the session has a tempo (improv's own time.bpm, MIDI clock, Link), the
daemon says so: `meter(numerator, denominator)` once, and `tempo(time_s, bpm, beat)` whenever it
reads the session's tempo ("at time_s the session is at quarter note `beat` of the song, at bpm";
as often as it likes: each call is a few arithmetic operations on the engine thread, and the
recorder decides what is worth writing). The file then carries the meter and a tempo map, and a
DAW imports it in time: the session's bar lines are the file's bar lines, tick 0 is one, and every
message keeps its time in seconds. The rules (improv.midi.files.TempoMap):

- before the first tempo, the file runs at 120 bpm in the meter from tick 0; the bar in which the
  session's first bar line falls is shortened to end on it (a bar of so many sixteenths, e.g. 3/16:
  a pickup), so the session's bar 1 starts a bar of the file, and the silence before it (else the
  bar before) bends its tempo a little to take up the rounding to a sixteenth. The session's beats
  are then at tick = beat * 480 + C, C a bar line of the file;
- a tempo change is written where the beat would otherwise drift more than a 48th of a beat from
  the session's, and no more often than once a beat, so a jittery estimate writes one tempo;
- a jump of the session's beat (improv's own tempo counts its bars from each phrase's first note; a
  clock's Start or Song Position) shortens the bar it falls in the same way, so each new start of
  the bars is a file bar line.

The engine thread still encodes at 1/960 s a tick; the recorder thread moves the bytes onto the
tempo map (improv.midi.files.TrackRetimer), once for all except the last few bars, which a jump
may still change and which are moved again at each rewrite. Without any tempo call the file is
what it always was: 120 bpm, no time signature, its ticks counting seconds.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import threading
from pathlib import Path

from improv.errors import MidiFileError, RecordingError
from improv.events import NoteEvent
from improv.midi.files import (END_OF_TRACK, TICKS_PER_S, TempoMap, TempoView, TrackRetimer, TrackWriter,
                               check_meter, file_header, replace_file, track_header)
from improv.paths import default_sessions_dir

log = logging.getLogger("improv")

BLOCK_BYTES = 256 * 1024  # a track's written bytes are kept in blocks of about this size (see _Take)


class _Take:
    """One track of the take: a TrackWriter the engine thread encodes into, and the bytes taken from
    it so far as a list of immutable blocks that only the flushing thread reads and changes. Small
    takes are joined into the last block until it reaches BLOCK_BYTES, so a long take is a few
    blocks, each copied a bounded number of times. Once the session has a tempo, the blocks hold
    the track moved onto the tempo map (`retimer` holds what is not moved for good yet, and `tail`
    is that part as last written)."""

    def __init__(self, name: str, channel: int, tempo: bool):
        self.writer = TrackWriter(name, channel, tempo)
        self.blocks: list[bytes] = []
        self.size = 0  # the bytes taken from the writer
        self.body = 0  # the bytes in the blocks
        self.metas = tempo  # this track carries the file's meta events
        self.retimer: TrackRetimer | None = None
        self.tail = bytearray()

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
        self.body += len(fresh)
        return True

    def retime(self, fresh: bytearray, view: TempoView, settled_s: float) -> bool:
        """Move the track onto the tempo map: for good before `settled_s`, for now after it. The first
        time, the blocks (written at the file's default tempo) are moved too. False if the track's
        bytes are what they were."""
        if self.retimer is None:
            self.retimer = TrackRetimer(self.metas)
            for block in self.blocks:
                self.retimer.feed(block)
            self.blocks, self.body = [], 0
        self.retimer.feed(fresh)
        kept = self.keep(self.retimer.retime(view, settled_s))
        tail = self.retimer.tail(view)
        changed = kept or tail != self.tail
        self.tail = tail
        return changed

    def parts(self) -> list[bytes]:
        return [track_header(self.body + len(self.tail)), *self.blocks, bytes(self.tail), END_OF_TRACK]


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
        self._tempo_map = TempoMap()  # the file's tempo and meter, planned as the session's tempo is heard
        self._recent = self._tempo_map.recent.append  # each event's time: the silences a jump may bend
        self._meter_late = False
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
            self._recent(time_s - self.start_s)

    def player_message(self, time_s: float, data) -> None:
        """Any other channel message the player sent (pedal, pitch bend, aftertouch, a controller,
        a program change), on the player's track."""
        with self._lock:
            self._player.writer.message(time_s - self.start_s, data)
            self._recent(time_s - self.start_s)

    def improv(self, event: NoteEvent, time_s: float) -> None:
        """A note improv sent at `time_s` (the daemon's clock)."""
        with self._lock:
            self._improv_note(time_s - self.start_s, event.pitch, event.velocity)
            self._recent(time_s - self.start_s)

    def meter(self, numerator: int, denominator: int) -> None:
        """The session's meter (4/4 if never said), written once the tempo is known. Said before
        the first `tempo`; a later call for another meter is ignored (and logged once). ValueError
        if the file cannot carry it (1..255 beats of 1, 2, 4, ... 64)."""
        check_meter(numerator, denominator)
        with self._lock:
            plan = self._tempo_map
            if not plan.known:
                plan.set_meter(numerator, denominator)
                return
            if (numerator, denominator) == (plan.numerator, plan.denominator):
                return
            late, self._meter_late = self._meter_late, True
        if not late:
            log.warning("the recording's meter is set before its first tempo: %d/%d is not written",
                        numerator, denominator)

    def tempo(self, time_s: float, bpm: float, beat: float) -> None:
        """At `time_s` (the daemon's clock) the session is at quarter note `beat` of the song, at `bpm`.
        Called whenever the session's tempo is read, as often as that is: the recorder writes a
        tempo when it is first known, where the beat would otherwise drift from the session's,
        and where the beat jumps. Calls with no tempo (bpm None) are not needed; they are ignored."""
        if bpm is None or beat is None:
            return
        with self._lock:
            self._tempo_map.tempo(time_s - self.start_s, bpm, beat)

    @property
    def encoded_bytes(self) -> int:
        """The take's bytes so far, as the file will hold them once written (its size); once a tempo
        is known, as they were encoded before being moved onto the tempo map (a few bytes off)."""
        with self._lock:
            taken = sum(take.size + len(take.writer.body) for take in (self._player, self._improv))
        return len(file_header(2)) + 2 * (len(track_header(0)) + len(END_OF_TRACK)) + taken

    def flush(self, final: bool = False) -> None:
        """Write the take if the file lacks any of it (or is missing). `final`: the take has ended,
        and its tempo map is settled to its end."""
        with self._flush_lock:
            with self._lock:  # a swap of buffers: the engine thread waits for nothing more
                fresh = [self._player.take(), self._improv.take()]
                view, settled_s = None, math.inf
                plan = self._tempo_map
                if plan.known:  # (a copy of a few lists: the plan's segments and meters)
                    if not final:
                        latest_s = max(plan.latest_s, *(take.writer.last_tick / TICKS_PER_S
                                                        for take in (self._player, self._improv)))
                        settled_s = latest_s - plan.settle_s()
                    plan.settle(settled_s)
                    view = plan.view()
            for take, new in zip((self._player, self._improv), fresh):
                if take.retime(new, view, settled_s) if view is not None else take.keep(new):
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
        self.flush(final=True)
