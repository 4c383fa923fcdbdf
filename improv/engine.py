"""The engine: hears the player, steps the stateful model, and schedules improv's notes.

Pure core: it is driven by calls that carry the time (`on_player(now, msg)`, `poll(now)`) and
returns the note events to send, so the daemon runs it on the monotonic clock and `improv
generate` and the tests run it on a virtual clock, through the same code.

The model's context is one token stream of everything heard: the player's notes and improv's own.
Generation runs `lookahead_ms` ahead of the clock; each generated note waits in `pending` with a
checkpoint of the model state after it. When a note is sent, its checkpoint becomes the committed
state. When the player plays over notes not yet sent, they are dropped and the model returns to the
committed state, so its context is exactly what was heard (never re-run over the phrase).

The session memory (improv.memory) learns the stream as it is committed, so it too learns only what
was heard; by default only the player's tokens, so that improv does not feed on its own output. Its
prediction is mixed into the model's before each generated token is sampled.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, NamedTuple, Protocol

import numpy as np

from improv.clock import Grid, InternalTimeline, PlayerTempo, Timeline, bar_beats
from improv.config import Config
from improv.events import DRUM_CHANNEL, Decoder, Encoder, NoteEvent, Vocabulary
from improv.key import AUTO, Key, KeyDetector, parse_key, penalty
from improv.memory import ContextClasses, SessionMemory
from improv.sampling import MaskBuilder, sample

# An onset this close to a grid line is on it: a session's clock read twice (Link, MIDI clock) does not
# give the very same beat for the same time, and a line a microsecond away is that line, not the next.
ON_GRID_S = 0.0005
CONTEXT_KEPT = 1024  # the last tokens fed, kept for a model switched in to hear (switch_model)
PRIME_TOKENS = 256  # how many of them a model switched in hears
MAX_TOKENS_PER_POLL = 512  # a model that never advances time cannot hold the engine
TIMES_KEPT = 4096  # step and token durations kept for the status line and the bench


class SteppedModel(Protocol):
    """The model the engine drives: a stateful next-token predictor over `vocab`.

    The logits returned may be a buffer the next call overwrites (OnnxModel's are), so the engine
    copies what it keeps. `snapshot` returns an opaque state that `restore` brings back exactly: the
    rollback to what was heard depends on it.
    """

    vocab: Vocabulary

    def reset(self) -> None:
        """Back to the zero state, before any token."""

    def step(self, token: int) -> np.ndarray:
        """Feed one token; the logits of the next."""

    def prime(self, tokens: list[int]) -> np.ndarray:
        """Feed several tokens in one call; the logits after each of them, (len(tokens), V)."""

    def snapshot(self) -> Any:
        """The current state, unaffected by later calls."""

    def restore(self, state: Any) -> None:
        """Return to a state `snapshot` gave."""


def _probability(logits: np.ndarray, token: int) -> float:
    shifted = np.exp(logits - logits.max())
    return float(shifted[token] / shifted.sum())


class State(Enum):
    """What improv is doing. Every change of state is in Engine's "state machine" section:

    LISTENING -> WAITING      the player strikes a key: a phrase is owed an answer
    WAITING -> STARTING       call-response: silence_ms after the player's last message, with every
                              key and the pedal up, the answer begins (prepared a lookahead early)
    LISTENING | WAITING -> REACTING   continuous: the model hears the player while improv's notes
                              are all silent: improv comes in at once
    LISTENING | WAITING -> ANSWERING  continuous: the same while improv's last notes still sound:
                              it plays on in its own time
    LISTENING | WAITING -> STARTING   the answer-now control: the answer begins at once, as if
                              silence_ms had passed with every key up (held keys are let go)
    STARTING | REACTING -> ANSWERING  the answer's first NOTE_ON is generated
    STARTING | REACTING | ANSWERING -> LISTENING   the answer reaches its length; or, in
                              call-response, the model hears the player (then WAITING on a key)
    any -> LISTENING          panic, stop, reset
    """

    LISTENING = "listening"  # silent, owing nothing
    WAITING = "waiting"  # silent; call-response answers once the player's phrase is over
    STARTING = "starting"  # the first token must begin a note (VELOCITY or NOTE_ON): no opening pause
    REACTING = "reacting"  # the first token must be a NOTE_ON, at the velocity just heard
    ANSWERING = "answering"  # improv plays in its own time

    @property
    def generating(self) -> bool:
        """Improv's notes are being generated (its answer is under way)."""
        return self in (State.STARTING, State.REACTING, State.ANSWERING)


@dataclass
class Checkpoint:
    state: Any  # the model's snapshot
    logits: np.ndarray
    encoder: Encoder
    decoder: Decoder
    tokens_fed: int
    recent: tuple[int, ...]  # the last tokens fed: the session memory's context


def chosen_style(config: Config, vocab: Vocabulary) -> str | None:
    """model.style checked against the model's styles (None or "none": no style token). A name the
    model does not have is one ModelSpecError naming the ones it has."""
    style = config.model.style
    if style in (None, "", "none"):
        return None
    vocab.style(style)
    return style


class Pending(NamedTuple):
    event: NoteEvent
    checkpoint: Checkpoint


class Engine:
    """Improv's side of the duet; `state` says what it is doing. A change of `config.engine.mode`
    goes with a `panic`, as the daemon makes it: one mode's state is not carried into the other."""

    def __init__(self, model: SteppedModel, config: Config, now_s: float, rng: np.random.Generator | None = None,
                 *, record_history: bool = False, emit: Callable[[NoteEvent], None] | None = None,
                 memory: SessionMemory | None = None, timeline: Timeline | None = None):
        self.model, self.config = model, config
        # Where the beat is: the session's (MIDI clock, Link) or improv's own tempo (time.bpm).
        self.timeline = timeline if timeline is not None else InternalTimeline(config.time.bpm, now_s)
        self.memory = memory if memory is not None else SessionMemory(
            model.vocab.size, max_contexts=config.memory.max_contexts, classes=ContextClasses.for_vocab(model.vocab))
        self.record_history = record_history  # keep every token the model was fed (tests, debugging)
        # Sends a note at once (the daemon's output). A generated note already due then goes out
        # before the model steps on it, which takes that step off the path from decision to sound.
        # Without it, every note waits to be returned by `poll`.
        self.emit = emit
        self.vocab = model.vocab
        self.step_s = self.vocab.time_step_ms / 1000.0
        self.masks = MaskBuilder(self.vocab)
        self.rng = rng if rng is not None else np.random.default_rng(config.sampling.seed)
        # Durations for the status line and the bench: each model call of one token, and each
        # generated token's whole cost (mask, sample, step, decode, checkpoint).
        self.step_ns: deque[int] = deque(maxlen=TIMES_KEPT)
        self.token_ns: deque[int] = deque(maxlen=TIMES_KEPT)
        self.notes_in = self.notes_out = 0
        self.key_detector = KeyDetector()  # the player's key, heard live (key.name auto)
        self.player_tempo = PlayerTempo()  # the player's tempo, heard live (time.follow_player)
        self._key_setting: tuple | None = None  # (name, pitch classes) last parsed, and what it gave
        self._key_parsed: Key | str | None = None
        self._penalty_for: tuple | None = None  # (key, strength) the penalty below is for
        self._penalty = np.zeros(self.vocab.size, dtype=np.float32)
        self.style = chosen_style(config, self.vocab)  # the style the context began with; a bad name stops here
        config.model.loaded_styles = self.vocab.styles  # what the style CC picks among
        self.reset(now_s)

    # -- state ------------------------------------------------------------------------------------
    def reset(self, now_s: float) -> None:
        """A fresh context: zero state, START, nothing sounding, nothing pending."""
        self.model.reset()
        self.history: list[int] | None = [] if self.record_history else None
        self.history_calls: list[int] = []  # tokens fed after each model call (calls group tokens)
        self.poll_now_s = float("-inf")  # the time of the poll under way: what is due by then may go early
        self.encoder = Encoder(self.vocab, origin_s=now_s, max_shift_s=self.config.engine.max_gap_ms / 1000)
        self.decoder = Decoder(self.vocab, origin_s=now_s)
        self.tokens_fed = 0
        self.context: deque[int] = deque(maxlen=CONTEXT_KEPT)  # the last tokens fed (a rollback drops its own)
        self.recent: deque[int] = deque(maxlen=self.memory.max_order)  # the last tokens fed, heard or not
        # What the memory may learn of the tokens fed since the last commit (the player's, and improv's
        # with memory.learn_own): (position in the stream, token, the model's probability of it or None)
        self.learnable: list[tuple[int, int, float | None]] = []
        self.style = chosen_style(self.config, self.vocab)
        self.logits = self._feed(self.vocab.context_start(self.style))  # START, then the style's token
        self.pending: deque[Pending] = deque()
        self.sent: dict[int, float] = {}  # improv notes sounding on the output: pitch -> onset time
        self.keys_down: set[int] = set()
        self.let_go: set[int] = set()  # keys answer_now took as let go: their key-ups are not heard
        self.last_player_s: float | None = None
        self.state = State.LISTENING
        # When the answer under way ends. Its own field: a continuous answer's end moves with every
        # message heard, while the state stays.
        self.answer_end_s: float | None = None
        self.answer_end_beat: float | None = None  # with time.response_bars: the bar line it ends on
        # A generated time shift pulled to the grid lands on this beat (and, should the tempo be lost,
        # at this time); it is placed when it comes within the lookahead, on the tempo as it is then.
        self.landing: tuple[float, float] | None = None
        self.learnable.clear()  # START is the model's, not something heard
        self.committed = self._checkpoint()

    def forget(self, now_s: float) -> None:
        """A new piece: the session memory and the model's state both start again."""
        self.memory.clear()
        self.key_detector.clear()
        self.player_tempo.clear()
        self.reset(now_s)

    def key(self) -> Key | None:
        """The key improv keeps to now: the configured one, or with `auto` the player's as heard
        (None until a note is heard), or None."""
        setting = (self.config.key.name, tuple(self.config.key.pitch_classes or ()))
        if setting != self._key_setting:
            self._key_setting, self._key_parsed = setting, parse_key(setting[0], setting[1])
        return self.key_detector.key if self._key_parsed == AUTO else self._key_parsed

    def key_status(self) -> str | None:
        """The key for the status line: None with no key set."""
        key = self.key()
        if self._key_parsed == AUTO:
            return f"auto {key or '?'}"
        return str(key) if key is not None else None

    def _checkpoint(self) -> Checkpoint:
        return Checkpoint(self.model.snapshot(), self.logits.copy(), self.encoder.copy(), self.decoder.copy(),
                          self.tokens_fed, tuple(self.recent))

    def _commit(self, checkpoint: Checkpoint) -> None:
        """What was fed up to `checkpoint` has been heard: it becomes the state a rollback returns to,
        and the session memory learns it."""
        heard = sum(1 for position, _, _ in self.learnable if position < checkpoint.tokens_fed)
        for _, token, p_model in self.learnable[:heard]:
            self.memory.learn(token, p_model)
        del self.learnable[:heard]
        self.committed = checkpoint

    def _rollback(self) -> None:
        """Drop what was generated but not sent; the model returns to what was heard."""
        self.pending.clear()
        self.landing = None
        if self.tokens_fed != self.committed.tokens_fed:
            c = self.committed
            for _ in range(min(self.tokens_fed - c.tokens_fed, len(self.context))):
                self.context.pop()
            self.model.restore(c.state)
            self.logits = c.logits.copy()
            self.encoder, self.decoder, self.tokens_fed = c.encoder.copy(), c.decoder.copy(), c.tokens_fed
            self.recent.clear()
            self.recent.extend(c.recent)
            self.learnable.clear()
            if self.history is not None:
                del self.history[c.tokens_fed :]
                while self.history_calls and self.history_calls[-1] > c.tokens_fed:
                    self.history_calls.pop()

    def _feed(self, tokens: list[int], players: bool = False, in_context: bool = True) -> np.ndarray:
        """Feed tokens in one model call and return the next-token logits. Heard events come as a
        few tokens at once (time shift, velocity, note): one call for them costs less time than a
        step for each. `players`: the tokens are the player's (the memory learns those by default).
        `in_context`: the memory matches them too (not the pause before an answer, see _start_answer)."""
        if in_context:
            self.recent.extend(tokens)
        self.context.extend(tokens)
        # The memory's weights learn from how likely the model found what the player played: the last
        # token of a heard event, its note (a model step or a buffer can overwrite the logits, so the
        # probability is taken at once).
        started = time.perf_counter_ns()
        if len(tokens) == 1:
            p_last = _probability(self.logits, tokens[0]) if players else None
            logits = self.model.step(tokens[0])
            self.step_ns.append(time.perf_counter_ns() - started)
        else:
            every = self.model.prime(tokens)
            logits = every[-1]
            p_last = _probability(every[-2], tokens[-1]) if players else None
        if players or self.config.memory.learn_own:
            self.learnable.extend((self.tokens_fed + i, token, p_last if i == len(tokens) - 1 else None)
                                  for i, token in enumerate(tokens) if not self.vocab.is_style(token))
        self.tokens_fed += len(tokens)
        if self.history is not None:
            self.history.extend(tokens)
            self.history_calls.append(self.tokens_fed)
        return logits

    def _step(self, token: int) -> np.ndarray:
        return self._feed([token])

    # -- the state machine: every change of `state` after `reset` is here ---------------------------
    def _player_heard(self, now_s: float, key_struck: bool) -> None:
        """The model heard a message from the player."""
        engine = self.config.engine
        continuous = engine.mode == "continuous"
        if not continuous and self.state.generating:
            self.state = State.LISTENING  # call-response: the player plays over the answer, which stops
        if not self.timeline.playing:
            return  # the session's transport is stopped: nothing is owed until it starts
        if key_struck and self.state is State.LISTENING:
            self.state = State.WAITING
            if isinstance(self.timeline, InternalTimeline):
                self.timeline.anchor(now_s)  # improv's bars count from the player's downbeat
        if continuous and engine.enabled:
            # From silence, improv comes in at once; once playing, it keeps its own time.
            if not self.state.generating:
                self.state = State.ANSWERING if self.sent else State.REACTING
            self._set_answer_end(now_s)

    def _answer_starts(self, start_s: float) -> None:
        assert self.state is State.WAITING
        self.state = State.STARTING
        self._set_answer_end(start_s)

    def _answer_asked(self, now_s: float) -> None:
        assert not self.state.generating
        self.state = State.STARTING
        self._set_answer_end(now_s)

    def _note_generated(self) -> None:
        if self.state in (State.STARTING, State.REACTING):
            self.state = State.ANSWERING

    def _answer_ends(self) -> None:
        self.state = State.LISTENING

    def _panicked(self) -> None:
        self.state = State.LISTENING  # whatever was heard is no longer owed an answer

    # -- the session's time ---------------------------------------------------------------------
    def _set_answer_end(self, from_s: float) -> None:
        """An answer from `from_s` lasts engine.response_ms; with time.response_bars and a tempo, it
        ends on the bar line nearest that many bars on (so it lasts that many whole bars, less or
        more half a bar when it did not start on a bar line)."""
        bars = self.config.time.response_bars
        beat = self.timeline.beat_at(from_s) if bars is not None else None
        if beat is None:
            self.answer_end_beat, self.answer_end_s = None, from_s + self.config.engine.response_ms / 1000
            return
        bar = bar_beats(self.config.time.meter)
        self.answer_end_beat = math.ceil((beat + (bars - 0.5) * bar) / bar) * bar
        self.answer_end_s = self.timeline.time_of_beat(self.answer_end_beat)

    def _follow_tempo(self, now_s: float) -> None:
        """Keep up with the session's time: time.bpm turned live, an answer's end in bars as the tempo
        moves, and a transport that stopped (Link's start/stop) ends the answer."""
        timeline, time_ = self.timeline, self.config.time
        if isinstance(timeline, InternalTimeline):
            if time_.follow_player and not self.keys_down:  # (not while a phrase is being played: it costs)
                timeline.tempo_bpm = self.player_tempo.bpm or time_.bpm  # bars still count from the phrase's first note
            elif not time_.follow_player and timeline.bpm != time_.bpm:
                timeline.set_bpm(time_.bpm, now_s)
        if self.answer_end_beat is not None and self.state.generating:
            end_s = timeline.time_of_beat(self.answer_end_beat)
            if end_s is not None:
                self.answer_end_s = end_s

    def _on_grid_beats(self) -> float:
        return ON_GRID_S * (self.timeline.bpm or 0.0) / 60.0

    def _grid(self) -> Grid | None:
        """The grid improv's onsets are pulled to, or None: no grid, strength 0, or no tempo known."""
        time_ = self.config.time
        if time_.grid == "off" or time_.grid_strength <= 0 or self.timeline.bpm is None:
            return None
        return Grid(time_.grid, time_.swing, time_.grid_strength)

    def _on_time(self, time_s: float) -> float:
        """The time an answer due at `time_s` starts: the next beat or bar (time.start_on), then the
        next grid line; `time_s` itself in free time."""
        beat = self.timeline.beat_at(time_s)
        if beat is None:
            return time_s
        start_on = self.config.time.start_on
        if start_on != "free":
            unit = 1.0 if start_on == "beat" else bar_beats(self.config.time.meter)
            beat = math.ceil(beat / unit - 1e-9) * unit
        grid = self._grid()
        if grid is not None:
            beat = grid.pull(beat, grid.line_at_or_after(beat - self._on_grid_beats()))
        placed = self.timeline.time_of_beat(beat)
        return max(time_s, placed) if placed is not None else time_s

    def _move_to(self, target_s: float) -> None:
        """Generated time up to `target_s` exactly. The model hears it in time shifts counted from the
        time it has heard so far (the encoder's), so what it hears stays within half a step of what
        was sent and never drifts; the decoder, which times what is sent, is put on `target_s`."""
        steps = round((target_s - self.encoder.cursor_s) / self.step_s)
        if steps > 0:
            self._advance(steps)
        if abs(self.decoder.time_s - target_s) <= self.step_s + 1e-9:  # not cut at the answer's end
            self._shift_origin(target_s - self.decoder.time_s)

    def _shift_origin(self, correction_s: float) -> None:
        """What is sent moves by less than a step; what the model heard stays as it was."""
        self.decoder.origin_s += correction_s

    def _shift_on_grid(self, grid: Grid, steps: int) -> None:
        """A generated time shift, with the onset it leads to pulled to the grid (later than now). It
        is fed to the model once it lands within the lookahead (`_land`), not now: a long shift is
        placed on the tempo of the moment it lands, so the onsets follow a tempo that changes."""
        now_s = self.decoder.time_s
        now_beat = self.timeline.beat_at(now_s)
        beat = self.timeline.beat_at(now_s + steps * self.step_s)
        if beat is None or now_beat is None:
            self._advance(steps)  # the tempo was lost in between: free time
            return
        landing = grid.place_after(beat, now_beat + self._on_grid_beats())
        target = self.timeline.time_of_beat(landing)
        if target is None:
            self._advance(steps)
            return
        self.landing = (landing, target)

    def _landing_s(self) -> float:
        """When generation must go on while a shift waits to land: where it lands on the tempo now, or
        sooner where the answer ends or a sounding note reaches max_note_ms (`_advance` ends them)."""
        beat, planned_s = self.landing
        landing_s = self.timeline.time_of_beat(beat)
        stops = [landing_s if landing_s is not None else planned_s]
        if self.answer_end_s is not None:
            stops.append(self.answer_end_s)
        max_note_s = self.config.limits.max_note_ms / 1000
        stops += [onset + max_note_s for onset in self.decoder.sounding.values()]
        return max(self.decoder.time_s, min(stops))

    def _land(self) -> None:
        beat, planned_s = self.landing
        self.landing = None
        landing_s = self.timeline.time_of_beat(beat)
        self._move_to(max(self.decoder.time_s + self.step_s / 2, landing_s if landing_s is not None else planned_s))

    def _generation_s(self) -> float:
        """How far generation has gone: the decoder's time, or where a waiting shift must be placed."""
        return self.decoder.time_s if self.landing is None else self._landing_s()

    # -- heard events: the player's, and improv's own releases --------------------------------
    def _feed_heard(self, tokens: list[int], players: bool = False, in_context: bool = True) -> None:
        if tokens:
            self.logits = self._feed(tokens, players, in_context)
        # Generation continues from the heard context's time and velocity.
        self.decoder.origin_s, self.decoder.cursor_steps = self.encoder.origin_s, self.encoder.cursor_steps
        if self.encoder.velocity_bin is not None:
            self.decoder.velocity = self.vocab.bin_to_velocity(self.encoder.velocity_bin)

    def _align_decoder(self, time_s: float) -> None:
        """Generation continues from `time_s` exactly, not from the nearest 10 ms grid line."""
        self.decoder.origin_s = time_s - self.decoder.cursor_steps * self.step_s

    def _release_sent(self, now_s: float) -> list[NoteEvent]:
        """Note-off now for every improv note sounding on the output; the model hears them."""
        events = []
        tokens = self.encoder.advance_to(now_s) if self.sent else []
        for pitch in sorted(self.sent):
            tokens.append(self.vocab.note_off(pitch))
            self.encoder.absorb(tokens[-1])
            self.decoder.sounding.pop(pitch, None)
            events.append(NoteEvent(now_s, pitch, 0))
        self.sent.clear()
        self._feed_heard(tokens)
        return events

    def on_player(self, now_s: float, msg) -> list[NoteEvent]:
        """A message from the player (already filtered by channel). Returns events to send now."""
        kind = getattr(msg, "type", None)
        if getattr(msg, "channel", 0) == DRUM_CHANNEL and kind in ("note_on", "note_off"):
            return []  # drums are not pitches: the model does not hear them
        key_struck = kind == "note_on" and msg.velocity > 0
        if kind in ("note_on", "note_off") and msg.note in self.let_go:
            self.let_go.discard(msg.note)
            if not key_struck:
                return []  # heard as let go already (answer_now); improv may be sounding that pitch now
        if key_struck:
            self.keys_down.add(msg.note)
            self.notes_in += 1
            self.key_detector.note_on(now_s, msg.note)
            self.player_tempo.note_on(now_s)
        elif kind in ("note_on", "note_off"):
            self.keys_down.discard(msg.note)
            self.key_detector.note_off(now_s, msg.note)
        if not self.encoder.copy().feed(now_s, msg) and not self.committed.encoder.copy().feed(now_s, msg):
            # Nothing the model hears (pedal down, a key up under the pedal, an unmodelled controller):
            # no interruption, but every encoder a rollback could return to keeps what it changed.
            self.encoder.feed(now_s, msg)
            for checkpoint in {id(c): c for c in [self.committed, *(p.checkpoint for p in self.pending)]}.values():
                checkpoint.encoder.feed(now_s, msg)
            return []
        out = self._interrupt(now_s)
        if key_struck and msg.note in self.sent:
            # The player strikes a key improv is sounding: improv's note ends here, heard as such.
            self.sent.pop(msg.note)
            self.decoder.sounding.pop(msg.note, None)
            out.append(NoteEvent(now_s, msg.note, 0))
        self._feed_heard(self.encoder.feed(now_s, msg), players=True)
        self._align_decoder(now_s)
        self.last_player_s = now_s
        self._player_heard(now_s, key_struck)
        self._commit(self._checkpoint())
        return out

    def _interrupt(self, now_s: float) -> list[NoteEvent]:
        """What was generated but not heard goes; in call-response, improv's sounding notes end too."""
        self._rollback()
        if self.config.engine.mode == "continuous":
            return []  # improv plays on: its sounding notes end as the model decides
        return self._release_sent(now_s)

    # -- the clock --------------------------------------------------------------------------------
    def poll(self, now_s: float) -> list[NoteEvent]:
        """Start an answer when it is due, generate ahead, and return the events due by now."""
        engine = self.config.engine
        self._follow_tempo(now_s)
        if self.state.generating and not self.timeline.playing:
            return self.panic(now_s)  # the transport stopped: every note of improv's ends now
        self.poll_now_s = now_s
        if self._answer_due(now_s):
            self._start_answer()
        budget = MAX_TOKENS_PER_POLL
        horizon = now_s + engine.lookahead_ms / 1000
        committed = self.committed
        while self.state.generating and self._generation_s() <= horizon + 1e-9 and budget > 0:
            started = time.perf_counter_ns()
            self._generate_one()
            self.token_ns.append(time.perf_counter_ns() - started)
            budget -= 1
            if self.answer_end_s is not None and self.decoder.time_s >= self.answer_end_s:
                self._finish_answer()
            if self.pending and self.pending[0].event.time_s <= now_s + self.step_s:
                break  # a note is (nearly) due: send it first, generate the rest of the lookahead after
            if self.committed is not committed:
                break  # a note went out early: hear the player before generating the rest
        out = []
        while self.pending and self.pending[0].event.time_s <= now_s:
            item = self.pending.popleft()
            out.append(self._mark_sent(item.event))
            self._commit(item.checkpoint)
        self.poll_now_s = float("-inf")
        return out

    def next_deadline(self) -> float | None:
        """When `poll` next has work: a note due, generation running short, or an answer due."""
        candidates = []
        if self.pending:
            candidates.append(self.pending[0].event.time_s)
        if self.state.generating:
            candidates.append(self._generation_s() - self.config.engine.lookahead_ms / 1000)
        elif self._waiting_to_answer():
            candidates.append(self._answer_start_s() - self.config.engine.lookahead_ms / 1000)
        return min(candidates) if candidates else None

    def _waiting_to_answer(self) -> bool:
        engine = self.config.engine
        # Keys held, or released but ringing under the pedal, mean the phrase is not over.
        # (WAITING is entered on a player's key, so last_player_s is set.)
        return (self.state is State.WAITING and engine.mode == "call-response" and engine.enabled
                and not self.keys_down and not self.encoder.pedal_held and self.timeline.playing)

    def _answer_start_s(self) -> float:
        return self._on_time(self.last_player_s + self.config.engine.silence_ms / 1000)

    def _answer_due(self, now_s: float) -> bool:
        """An answer is prepared a lookahead before it sounds, so its first note is on time."""
        return self._waiting_to_answer() and now_s >= self._answer_start_s() - self.config.engine.lookahead_ms / 1000

    def _start_answer(self) -> None:
        """Begin generating the answer, speculatively: until its first note is sent, a key from the
        player rolls it back (silence included) to the last thing actually heard."""
        start_s = self._answer_start_s()
        self._restyle()
        # The model hears the silence before the answer; the memory's context skips it, so the answer
        # is matched against what the player played next after the phrase's last notes, as a
        # continuation of the phrase (the Continuator's way), not after a pause it never heard.
        # Then the style's token again: the model was trained to take it, next to an answer, as what
        # the answer is to be, whatever the phrase before it was (training.data.WindowSampler).
        answer_style = [self.vocab.style(self.style)] if self.style is not None else []
        self._feed_heard(self.encoder.advance_to(start_s) + answer_style, in_context=False)
        self._align_decoder(start_s)
        self._answer_starts(start_s)

    def _finish_answer(self) -> None:
        if self.answer_end_beat is not None and 0 < self.decoder.time_s - self.answer_end_s < self.step_s:
            self._shift_origin(self.answer_end_s - self.decoder.time_s)  # on the bar line, not the step after
        for pitch in sorted(self.decoder.sounding):
            self._push(self.vocab.note_off(pitch))
        self._answer_ends()

    # -- generation -----------------------------------------------------------------------------
    def _generate_one(self) -> None:
        if self.landing is not None:
            self._land()
            return
        grid = self._grid()
        if grid is not None and self.state in (State.STARTING, State.REACTING):
            beat = self.timeline.beat_at(self.decoder.time_s)
            on_grid = self.timeline.time_of_beat(grid.pull(beat, grid.line_at_or_after(beat - self._on_grid_beats())))
            if on_grid is not None and on_grid > self.decoder.time_s + ON_GRID_S:
                self._move_to(on_grid)  # an answer's first note waits for its grid line; the model hears the wait
                return
        limits, sampling = self.config.limits, self.config.sampling
        self.masks.set_range(limits.pitch_low, limits.pitch_high)
        key, strength = self.key(), self.config.key.strength
        if key is None or strength <= 0:
            key = None  # strength 0: exactly the output without a key
        self.masks.set_key(key.pitch_classes if key is not None and strength >= 1 else None)
        now_s = self.decoder.time_s
        releasable = [pitch for pitch, onset in self.decoder.sounding.items() if onset < now_s - 1e-9]
        # An answer's first token begins a note, so it sounds at once instead of after a pause the
        # model chose. Reacting, not even a VELOCITY token first: its model step would stand between
        # the player's note and improv's, and the note takes the velocity just heard.
        onset_now = self.state in (State.STARTING, State.REACTING)
        allowed = self.masks.build(self.decoder.sounding, limits.max_polyphony, onset_now, releasable,
                                   velocity_first=self.state is not State.REACTING)
        # The memory looks past what improv may not play now (a pause where a note must come first, the
        # note-off of a note the player held but improv does not): its match goes on through them.
        logits, looked_past = self.memory.mix(self.logits, self.recent, self.config.memory.attachment, allowed,
                                              look_past=True)
        if key is not None and strength < 1:
            logits = logits + self._key_penalty(key, strength)  # out-of-key NOTE_ONs damped
        token = sample(logits, sampling.temperature, sampling.top_p, self.rng, allowed)
        self.recent.extend(looked_past)  # the memory's context goes on as if improv had played them too
        self.feed_generated(token, grid)

    def _key_penalty(self, key: Key, strength: float) -> np.ndarray:
        """log(1 - strength) on each out-of-key NOTE_ON, 0 elsewhere (kept while key and strength stay)."""
        if self._penalty_for != (key, strength):
            self._penalty_for = (key, strength)
            on = self.vocab.offset("NOTE_ON")
            self._penalty[:] = 0
            self._penalty[on : on + 128][key.out_of_key()] = penalty(strength)
        return self._penalty

    def feed_generated(self, token: int, grid: Grid | None = None) -> None:
        """Feed a token as improv's own: notes wait in `pending`, time shifts respect max_note_ms and,
        with a `grid`, land where the grid pulls them."""
        group, value = self.vocab.decode_token(token)
        if group == "TIME_SHIFT":
            self._shift_on_grid(grid, value) if grid is not None else self._advance(value)
        else:
            self._push(token)
            if group == "NOTE_ON":
                self._note_generated()

    def _advance(self, steps: int) -> None:
        """A generated time shift, split where a note reaches max_note_ms so it ends exactly then,
        and cut where the answer reaches its length, where the engine then ends it."""
        max_note_s = self.config.limits.max_note_ms / 1000
        if self.answer_end_s is not None and self.state.generating:
            to_end = int(np.ceil((self.answer_end_s - self.decoder.time_s) / self.step_s - 1e-6))
            steps = max(1, min(steps, to_end))
        while steps > 0:
            deadlines = [(onset + max_note_s, pitch) for pitch, onset in self.decoder.sounding.items()]
            deadline_s, pitch = min(deadlines, default=(None, None))
            if deadline_s is not None:
                until = max(0, int((deadline_s - self.decoder.time_s) / self.step_s + 1e-6))
                if until < steps:
                    if until > 0:
                        self._push_shift(until)
                    self._push(self.vocab.note_off(pitch))
                    steps -= until
                    continue
            self._push_shift(steps)
            return

    def _push_shift(self, steps: int) -> None:
        """A time shift of any length, in tokens of at most the vocabulary's longest (a shift pulled to
        the grid can be longer than any the model samples)."""
        while steps > 0:
            token_steps = min(steps, self.vocab.time_shift_steps)
            self._push(self.vocab.time_shift(token_steps))
            steps -= token_steps

    def _push(self, token: int) -> None:
        """Feed a generated token; the notes it makes wait in `pending` until due, or, when due
        already with nothing queued before them, go out through `emit` before the model steps."""
        events = self.decoder.feed(token)
        early = (self.emit is not None and bool(events) and not self.pending
                 and all(event.time_s <= self.poll_now_s for event in events))
        if early:
            for event in events:
                self.emit(self._mark_sent(event))
        self.logits = self._step(token)
        self.encoder.absorb(token)
        if events:
            checkpoint = self._checkpoint()
            if early:
                self._commit(checkpoint)
            else:
                for event in events:
                    self.pending.append(Pending(event, checkpoint))

    def _mark_sent(self, event: NoteEvent) -> NoteEvent:
        """Record a note as gone out (it is sounding, or no longer) and return it at the output's
        velocity; the caller sends it."""
        if event.is_on:
            self.sent[event.pitch] = event.time_s
            self.notes_out += 1
            velocity = min(127, max(1, round(event.velocity * self.config.limits.velocity_scale)))
            return NoteEvent(event.time_s, event.pitch, velocity)
        self.sent.pop(event.pitch, None)
        return event

    # -- control ----------------------------------------------------------------------------------
    def panic(self, now_s: float) -> list[NoteEvent]:
        """Release everything improv sounds at once; stop any answer; keep listening. The player's
        held keys are let go too (a lost note-off must not keep improv waiting for ever)."""
        self._rollback()
        self._panicked()
        out = self._release_sent(now_s)
        self.keys_down.clear()
        self._feed_heard(self.encoder.release_all(now_s))
        self._commit(self._checkpoint())
        return out

    def answer_now(self, now_s: float) -> list[NoteEvent]:
        """Answer at once, as if silence_ms had passed with every key up (call-and-response), or
        come in now (continuous). Keys still held, and notes ringing under the pedal, are heard as let
        go now, as panic lets them go: their key-ups, when they come, are then nothing the model
        hears, so they do not stop the answer. Nothing happens while improv is off or already
        playing. Returns the events to send now (improv's release of notes still sounding from an
        answer that was ending, in call-and-response)."""
        if not self.config.engine.enabled or self.state.generating:
            return []
        out = self._interrupt(now_s)
        held = sorted(self.keys_down | self.encoder.pedal_held)
        self.encoder.pedal_down, self.encoder.pedal_held = False, set()
        tokens = [token for pitch in held for token in self.encoder.note_off(now_s, pitch)]
        self.let_go |= self.keys_down
        self.keys_down.clear()
        if tokens:
            self._feed_heard(tokens)
        self._commit(self._checkpoint())
        self._restyle()
        # As _start_answer: the pause since the last thing heard, not in the memory's context.
        self._feed_heard(self.encoder.advance_to(now_s), in_context=False)
        self._align_decoder(now_s)
        self._answer_asked(now_s)
        return out

    def switch_model(self, model: SteppedModel, now_s: float) -> list[NoteEvent]:
        """Play on with another model of the same vocabulary: improv's notes are released (as by
        panic: nothing is left sounding, held keys are let go) and the new model hears the last
        PRIME_TOKENS tokens heard, so it goes on from the same context. The session memory stays.
        Returns the note-offs to send. ValueError for a model of another vocabulary."""
        if model.vocab.to_json() != self.vocab.to_json():
            raise ValueError("its vocabulary differs from the model playing now")
        out = self.panic(now_s)
        self.model = model
        self._restart_context(self.style)
        return out

    def _restart_context(self, style: str | None) -> None:
        """The model starts again from START, the style's token and the last PRIME_TOKENS tokens heard."""
        start = self.vocab.special("START")
        heard = [token for token in list(self.context)[-PRIME_TOKENS:]
                 if token != start and not self.vocab.is_style(token)]
        self.model.reset()
        self.logits = np.array(self.model.prime([*self.vocab.context_start(style), *heard])[-1], copy=True)
        self.style = style
        self.committed = self._checkpoint()

    def _restyle(self) -> None:
        """A style chosen live (model.style, by its CC) takes effect at the next answer: before it, the
        model hears its context again after START and the new style's token (as on a model switch)."""
        style = chosen_style(self.config, self.vocab)
        if style != self.style:
            self._restart_context(style)

    def stop(self, now_s: float) -> list[NoteEvent]:
        return self.panic(now_s)
