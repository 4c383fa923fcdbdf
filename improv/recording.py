"""Session recording: the player's and improv's notes, two tracks, rewritten safely every few seconds.

The engine thread only appends to lists; a recorder thread writes the file (temporary file, then
rename), so a crash loses at most `flush_s` seconds and the engine never waits on the disk.
"""

from __future__ import annotations

import datetime
import logging
import threading
from pathlib import Path

from improv.events import NoteEvent
from improv.midifile import write_tracks

log = logging.getLogger("improv")


class SessionRecorder:
    def __init__(self, folder: str | Path, flush_s: float, start_s: float, output_channel: int = 0):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.path = self.folder / f"improv-session-{stamp}.mid"
        self.flush_s, self.start_s, self.output_channel = flush_s, start_s, output_channel
        self.player_events: list[NoteEvent] = []
        self.improv_events: list[NoteEvent] = []
        self._written = (0, 0)
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
        counts = (len(self.player_events), len(self.improv_events))
        if counts == self._written:
            return
        player, improv = self.player_events[: counts[0]], self.improv_events[: counts[1]]
        try:
            write_tracks(self.path, [("player", player), ("improv", improv)], channels=[0, self.output_channel])
            self._written = counts
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
