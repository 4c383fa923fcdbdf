"""The engine on a virtual clock: continue a MIDI file, or drive any scripted performance.

This is the daemon's engine, not a separate path: the seed is played into `Engine.on_player` at its
own times and `Engine.poll` runs at every deadline, exactly as the live loop does, only without
waiting for the time to pass.
"""

from __future__ import annotations

import copy
from typing import Iterable

from improv.config import Config
from improv.engine import Engine, SteppedModel
from improv.events import Msg, NoteEvent

MAX_POLLS = 10_000_000  # a bound for a run that would otherwise never end
STALL_STEP_S = 0.001  # the live loop's shortest wait when a deadline is already due


class VirtualClock:
    def __init__(self, start_s: float = 0.0):
        self.now_s = start_s

    def now(self) -> float:
        return self.now_s

    def advance_to(self, time_s: float) -> None:
        self.now_s = max(self.now_s, time_s)


def run_until(engine: Engine, clock: VirtualClock, until_s: float) -> list[NoteEvent]:
    """Poll the engine at each of its deadlines up to `until_s`, then at `until_s`."""
    out = []
    for _ in range(MAX_POLLS):
        deadline = engine.next_deadline()
        if deadline is None or deadline > until_s:
            break
        clock.advance_to(deadline)
        out += engine.poll(clock.now())
        after = engine.next_deadline()
        if after is not None and after <= clock.now():
            clock.advance_to(clock.now() + STALL_STEP_S)  # as the live loop does: never spin in place
    clock.advance_to(until_s)
    out += engine.poll(clock.now())
    return out


def perform(engine: Engine, clock: VirtualClock, messages: Iterable[tuple[float, object]]) -> list[NoteEvent]:
    """Play timed messages into the engine as a player would; returns improv's events meanwhile."""
    out = []
    for time_s, msg in messages:
        out += run_until(engine, clock, time_s)
        out += engine.on_player(clock.now(), msg)
    return out


def continue_performance(model: SteppedModel, config: Config, seed: list[tuple[float, object]], seconds: float,
                         rng=None) -> list[NoteEvent]:
    """Improv's continuation of `seed`: it listens to the whole seed, then answers for `seconds`."""
    config = copy.deepcopy(config)
    config.engine.mode = "call-response"
    config.engine.response_ms = max(100, round(seconds * 1000))
    config.engine.enabled = False  # listen to the whole seed, pauses included, before answering
    clock = VirtualClock(0.0)
    engine = Engine(model, config, clock.now(), rng)
    out = perform(engine, clock, seed)
    end_of_seed = seed[-1][0] if seed else 0.0
    out += run_until(engine, clock, end_of_seed)
    for pitch in sorted(engine.keys_down):  # a seed that ends with keys held: the player lets go
        out += engine.on_player(clock.now(), Msg("note_off", pitch, 0))
    config.engine.enabled = True
    answer_start = max(end_of_seed, engine.last_player_s or 0.0) + config.engine.silence_ms / 1000
    out += run_until(engine, clock, answer_start + seconds + config.engine.lookahead_ms / 1000)
    out += engine.stop(clock.now())
    return out
