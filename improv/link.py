"""Ableton Link as the session's clock (time.sync: link): tempo, beat and phase from the Link
session, and the transport's start and stop when peers sync it. Needs `pip install 'improv[link]'`.

aalink wraps Link for asyncio: its Link must be made on a running event loop, and it hands its
callbacks to that loop. LinkTimeline runs that loop on a daemon thread of its own. The engine
thread never waits on it: Link's session state may be captured from any thread (Link's docs:
captureAppSessionState is thread-safe), so `beat_at`, `bpm` and `peers` read it directly (0.6 us
a beat_at call). Only the start/stop callback runs on the loop.

Link's clock on Linux is CLOCK_MONOTONIC_RAW (its platforms/Config.hpp), not improv's
time.monotonic(): 0.24 s apart on the machine this was written on, and NTP slews one against the
other. So no offset is kept: each reading of Link's beat is bracketed by two reads of improv's
clock, and the beat is taken to fall between them (a bracket is well under a microsecond).

Link's peers agree on the phase within a bar (the quantum), not on the count of beats. When the
transport starts, improv maps beat 0 to the start (with peers, Link moves it to the first bar line
at or after it: the beats before are negative, a count-in), so that its beats count from the song's
start as the Timeline protocol asks; peers that do the same agree on the count as well.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from improv.errors import ConfigError

INSTALL_HINT = "time.sync: link needs the aalink package: pip install 'improv[link]'"
START_TIMEOUT_S = 5.0  # making the Link on the loop thread takes milliseconds; this only stops a hang
STOP_TIMEOUT_S = 2.0
TIGHT_READ_S = 20e-6  # a reading bracketed wider than this (the thread was preempted) is read again
READ_TRIES = 5


class LinkTimeline:
    """The Timeline of a Link session (improv.clock.Timeline), on `clock` (seconds). `bpm` is
    improv's tempo until a peer's wins; `quantum` is the bar in quarter notes, the span within
    which Link aligns phase. `join=False` keeps Link's session state on this machine alone."""

    def __init__(self, bpm: float, quantum: float, clock: Callable[[], float] = time.monotonic, join: bool = True):
        aalink = _import_aalink()
        self.clock = clock
        self.stopped = False  # a peer stopped the transport and none started it since (before any, improv plays)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="improv-link", daemon=True)
        self._thread.start()
        try:
            made = asyncio.run_coroutine_threadsafe(self._make_link(aalink, bpm, quantum, join), self._loop)
            self.link = made.result(timeout=START_TIMEOUT_S)
        except BaseException:
            self.link = None
            self._stop_loop()
            raise

    async def _make_link(self, aalink, bpm: float, quantum: float, join: bool):
        """On the loop thread: aalink takes the running loop as the one its callbacks go to."""
        link = aalink.Link(float(bpm))
        link.quantum = float(quantum)
        link.start_stop_sync_enabled = True  # before joining: the first session state improv sees has it
        link.add_start_stop_callback(self._on_start_stop)
        link.enabled = join
        return link

    def _on_start_stop(self, playing: bool) -> None:
        """On the loop thread, when the transport starts or stops (here or at a peer)."""
        link = self.link
        if link is None:  # closed while this call was queued
            return
        if playing:
            link.request_beat_at_start_playing_time(0.0)  # count from the start, before the engine sees it
        self.stopped = not playing

    # -- the Timeline -----------------------------------------------------------------------------
    @property
    def bpm(self) -> float:
        """The session's tempo (Link always has one: improv's own until a peer's)."""
        return self.link.tempo

    @property
    def playing(self) -> bool:
        return not self.stopped

    def beat_at(self, time_s: float) -> float:
        """The beat at `time_s`: Link's beat now, moved on at the session's tempo (Link's timeline
        is a straight line until the next tempo change or beat request, which a later call sees)."""
        now_s, beat, bpm = self._reading()
        return beat + (time_s - now_s) * bpm / 60.0

    def time_of_beat(self, beat: float) -> float:
        now_s, beat_now, bpm = self._reading()
        return now_s + (beat - beat_now) * 60.0 / bpm

    def _reading(self) -> tuple[float, float, float]:
        """(time on `clock`, Link's beat then, tempo): the tightest of a few bracketed reads."""
        link = self.link
        bpm = link.tempo
        best = None
        for _ in range(READ_TRIES):
            before_s = self.clock()
            beat = link.beat
            after_s = self.clock()
            if best is None or after_s - before_s < best[0]:
                best = (after_s - before_s, (before_s + after_s) / 2, beat)
            if best[0] <= TIGHT_READ_S:
                break
        return best[1], best[2], bpm

    # -- the session ------------------------------------------------------------------------------
    def set_bpm(self, bpm: float) -> None:
        """Propose a tempo to the session: every peer follows it (Link keeps it within 20..999)."""
        self.link.tempo = float(bpm)

    @property
    def peers(self) -> int:
        """The other Link apps in the session, for the status line."""
        return self.link.num_peers

    def close(self) -> None:
        """Leave the session and stop the loop thread. Safe to call twice."""
        link, self.link = self.link, None
        if link is not None:
            link.enabled = False  # peers see improv leave now, not at exit
            # The callback holds self and self held the Link: without this the Link is never freed.
            link.remove_start_stop_callback(self._on_start_stop)
            del link  # aalink's destructor stops Link's threads, with the GIL released
        self._stop_loop()

    def _stop_loop(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=STOP_TIMEOUT_S)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> LinkTimeline:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _import_aalink():
    """aalink, or a ConfigError saying how to install it (it is an optional extra)."""
    try:
        import aalink
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return aalink
