"""`improv run`: the engine on the real clock between a MIDI input and a MIDI output.

Threads: the MIDI system's thread runs the input callback (timestamp, enqueue); one engine thread
owns the model, the engine and the output; a recorder thread writes the session file; the main
thread handles signals and the status line. Every way out releases every sounding note.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections import Counter, deque
from typing import Callable

from improv.clock import FIT_PULSES, ClockFollower, bar_beats, parse_meter
from improv.config import Config
from improv.controls import action_for, apply_control
from improv.engine import Engine
from improv.errors import ImprovError, PortError
from improv.events import NoteEvent
from improv.midi.guard import EchoFilter, OutputGuard
from improv.midi.messages import CC_SUSTAIN, CONTROL_CHANGE, PANIC_CONTROLS, RawInput, is_note, note_bytes
from improv.midi.ports import MidiSystem, parse
from improv.memory import SessionMemory, memory_path_for
from improv.midi.recording import SessionRecorder

log = logging.getLogger("improv")

IDLE_WAKE_S = 0.5  # longest sleep of the engine thread: port checks happen this often when idle
MIN_WAIT_S = 0.0005  # never spin: a deadline already due still yields this long at least
PORT_CHECK_S = 1.0
ACTION_PRESSED = 64  # an action CC acts at a value of 64 or more: a button's press, not its release
BACKLOG_LIMIT = 1024  # input messages waiting for the engine; beyond this the flood is shed
STATUS_INTERVAL_S = 0.5
OUTPUT_DRAIN_S = 0.1  # after the last note-offs, before the output port closes
CLOSE_TIMEOUT_S = 5.0  # closing the MIDI clients takes milliseconds; past this, exit anyway
_STOP = object()
# Fault injection for the reliability tests: IMPROV_INJECT_FAULT=engine makes the engine raise once,
# on the first player note-on that lands while improv is answering (its notes sounding, or between
# them: the model may end a note just before the key lands, and the fault must still fire).
FAULT_ENV = "IMPROV_INJECT_FAULT"
# What the player plays: passed through (with midi.pass_through) and recorded. The engine hears notes
# and the pedal; bends, aftertouch, program changes and other controllers only go on as played.
PLAYED_TYPES = frozenset({"note_on", "note_off", "control_change", "pitchwheel", "aftertouch", "polytouch",
                          "program_change"})
IGNORED_TYPES = frozenset({"clock", "active_sensing", "sysex", "start", "stop", "continue", "songpos",
                           "song_select", "tune_request", "quarter_frame", "reset"})
TRANSPORT_TYPES = frozenset({"start", "stop", "continue", "songpos"})
# Clock pulses come apart from the other messages (ports' clock_pulses) and are fed to the clock
# follower this long after their time, so a Start, Stop or Continue sent just before them, which the
# input's reader thread queues, is heard before them.
PULSE_SETTLE_S = 0.05
TEMPO_LOG_BPM = 1.0  # the clock's tempo is logged when first known after a Start, and on a change of this much
# Why a clock pulse was left out (improv.clock.ClockFollower.ignored), said once in the log.
IGNORED_PULSES = {
    "stopped": "MIDI clock with the transport stopped (no Start yet, or after a Stop): its pulses are ignored until "
               "Start or Continue (press play on the clock source); until a first Start improv plays in its own time",
    "early": "MIDI clock pulses closer together than the tempo allows (a second clock source on improv's input, or "
             "a burst): ignored, improv follows the clock it locked on",
    "late": "MIDI clock pulses late (the clock source stalled): counted for the position, not for the tempo",
    "lost": "MIDI clock pulses lost on the way (JACK missed a cycle: an xrun): counted from their time",
}


def model_files(folder) -> list:
    """The .onnx models in `folder` in name order: program 0, 1, ... (at most 128)."""
    from pathlib import Path

    return sorted(Path(folder).expanduser().glob("*.onnx"))[:128]


def _keep_last(data: list[int]) -> bool:
    """Notes, the pedal and panics: shed only when nothing else is left to shed."""
    if not data:
        return False
    return is_note(data) or (data[0] & 0xF0 == CONTROL_CHANGE and len(data) > 1
                             and data[1] in (CC_SUSTAIN, *PANIC_CONTROLS))


class Backlog:
    """The engine thread's bounded input backlog. The callback's queue is drained into it before each
    message is handled, so a flood waits here, where the limit holds: beyond `limit`, the oldest
    other message goes first, and only when none is left the oldest note, pedal or panic message. Drops are
    counted. (A passed-through note whose note-off was shed is still released on the way out.)"""

    def __init__(self, limit: int = BACKLOG_LIMIT):
        self.limit = limit
        self.notes: deque[tuple[int, RawInput]] = deque()  # notes, pedal and panic messages
        self.others: deque[tuple[int, RawInput]] = deque()
        self.sequence = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self.notes) + len(self.others)

    def push(self, raw: RawInput) -> None:
        (self.notes if _keep_last(raw.data) else self.others).append((self.sequence, raw))
        self.sequence += 1
        if len(self) > self.limit:
            (self.others or self.notes).popleft()
            self.dropped += 1

    def pop(self) -> RawInput | None:
        if self.notes and (not self.others or self.notes[0][0] < self.others[0][0]):
            return self.notes.popleft()[1]
        if self.others:
            return self.others.popleft()[1]
        return None


class Daemon:
    def __init__(self, config: Config, model, midi_system: MidiSystem, clock: Callable[[], float] = time.monotonic,
                 config_source: str = "built-in defaults", memory: SessionMemory | None = None,
                 load_model: Callable | None = None):
        self.config, self.model, self.midi_system, self.clock = config, model, midi_system, clock
        # Models a Program Change picks (model.folder), by program number; loaded when first picked.
        self.model_files = model_files(config.model.folder) if config.model.folder else []
        self._load_model = load_model
        self._models: dict = {getattr(model, "path", None): model}
        self.config_source = config_source
        self.queue: queue.SimpleQueue = queue.SimpleQueue()  # the callback's side: put never blocks
        self.backlog = Backlog()
        self.counts: Counter = Counter()  # malformed, ignored, engine_errors
        self.start_s = clock()
        self.follower, self.link = None, None  # the session's clock: MIDI clock or Link (time.sync)
        timeline = self._timeline(config)
        self.engine = Engine(model, config, self.start_s, memory=memory, timeline=timeline,
                             emit=lambda event: self._send([event], self.clock()))  # a due note leaves at once
        self.pulses: deque[float] = deque()  # clock pulses read, not yet fed (PULSE_SETTLE_S)
        self.pulses_logged: set[str] = set()
        self.bpm_logged: float | None = None
        midi = config.midi
        # The recording folder is checked before any port opens: a bad one stops the start cleanly.
        self.recorder = (SessionRecorder(config.recording.folder, config.recording.flush_s, self.start_s,
                                         midi.output_channel - 1) if config.recording.enabled else None)
        if self.recorder is not None:
            self.recorder.meter(*parse_meter(config.time.meter))
        self.output = midi_system.open_output(midi.client_name, midi.output, clock)
        try:
            self.input = midi_system.open_input(midi.client_name, self._input_ports(), self.queue.put, clock)
        except BaseException:
            self.output.close()
            if self.link is not None:
                self.link.close()
            raise
        self.echoes = EchoFilter(midi.feedback_guard_ms / 1000)
        self.guard = OutputGuard(self.output, midi.output_channel - 1, self.echoes, clock)
        # Improv's notes waiting for their time plus a positive midi.output_offset_ms: (leave at, event).
        self.held: deque[tuple[float, NoteEvent]] = deque()
        self._thread = threading.Thread(target=self._engine_thread, name="improv-engine", daemon=True)
        self._stopping = threading.Event()
        self._next_port_check = 0.0
        self._inject_fault = os.environ.get(FAULT_ENV) == "engine"

    def _timeline(self, config: Config):
        """The session's clock the engine follows: None for improv's own tempo (the engine keeps it)."""
        if config.time.sync == "midi-clock":
            self.follower = ClockFollower()
            return self.follower
        if config.time.sync == "link":
            from improv.link import LinkTimeline

            self.link = LinkTimeline(config.time.bpm, bar_beats(config.time.meter), clock=self.clock)
            return self.link
        return None

    def _input_ports(self) -> list[str] | str | None:
        """midi.input, and with MIDI clock the port it comes from (time.clock_input), if another."""
        ports = self.config.midi.input
        clock_input = self.config.time.clock_input
        if self.follower is None or clock_input is None:
            return ports
        ports = [] if ports is None else [ports] if isinstance(ports, str) else list(ports)
        return ports + [clock_input] if clock_input not in ports else ports

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "Daemon":
        # The MIDI callback and the engine share the GIL: hand it over every 1 ms, not every 5 ms.
        sys.setswitchinterval(0.001)
        # A clean slate: if an earlier improv was killed (SIGKILL) mid-note, its notes end now.
        self.guard.release_all()
        if self.recorder is not None:
            self.recorder.start()
        self._thread.start()
        log.info("listening on %s, playing on %s (%s, %s mode); model %s; config %s; %s", self.input.name,
                 self.output.name, self.midi_system.name, self.config.engine.mode, getattr(self.model, "path", "?"),
                 self.config_source,
                 f"recording to {self.recorder.path}" if self.recorder is not None else "not recording")
        return self

    def stop(self) -> None:
        """Ask the engine thread to release everything and finish; safe from a signal handler."""
        self._stopping.set()
        self.queue.put(_STOP)

    def wait(self, status: Callable[[], None] | None = None) -> None:
        while self._thread.is_alive():
            self._thread.join(timeout=STATUS_INTERVAL_S)
            if status is not None:
                status()

    def run(self, status: Callable[[], None] | None = None) -> int:
        """Run until SIGINT or SIGTERM; returns the exit code."""
        previous = {sig: signal.signal(sig, lambda *_: self.stop()) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            self.wait(status)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    # -- the engine thread ----------------------------------------------------------------------
    def _engine_thread(self) -> None:
        try:
            while not self._stopping.is_set():
                # A port that places messages at their time takes them `handover` early, so the
                # engine thread's own wake-up jitter never moves a note.
                handover = self.output.handover_s if self.output is not None else 0.0
                # A negative output offset sends notes early: the engine is polled that much ahead.
                ahead = max(0.0, -self.config.midi.output_offset_ms / 1000)
                now = self.clock()
                deadlines = [d - handover - ahead for d in (self.engine.next_deadline(),) if d is not None]
                if self.held:
                    deadlines.append(self.held[0][0] - handover)
                wait = (IDLE_WAKE_S if not deadlines
                        else min(IDLE_WAKE_S, max(MIN_WAIT_S, min(deadlines) - now)))
                try:
                    item = self.queue.get(timeout=wait)
                except queue.Empty:
                    item = None
                if item is _STOP:
                    break
                if item is not None:
                    self.backlog.push(item)
                try:
                    self._follow_clock(self.clock() - PULSE_SETTLE_S)
                    while self._drain_queue() and (raw := self.backlog.pop()) is not None:
                        self._handle(raw)
                    now = self.clock()
                    self._record_tempo(now)
                    self._send(self.engine.poll(now + handover + ahead), now)
                    self._send_held(now + handover)
                    if now >= self._next_port_check:
                        self._check_ports(now)
                except Exception:
                    self.counts["engine_errors"] += 1
                    log.exception("engine error: releasing improv's notes and starting again from a fresh state")
                    self.held.clear()
                    self.guard.release_all()
                    self.engine.reset(self.clock())
        finally:
            self._shutdown()

    def _follow_clock(self, settled_s: float) -> None:
        """Feed the clock follower the pulses up to `settled_s` (earlier ones first: see PULSE_SETTLE_S)."""
        if self.follower is None:
            return
        if self.input is not None:
            self.pulses.extend(self.input.clock_pulses())
        follower = self.follower
        while self.pulses and self.pulses[0] < settled_s:
            follower.pulse(self.pulses.popleft())
        bpm = follower.bpm if follower.running and len(follower.fit) == FIT_PULSES else None
        if bpm is not None and (self.bpm_logged is None or abs(bpm - self.bpm_logged) >= TEMPO_LOG_BPM):
            self.bpm_logged = bpm
            log.info("clock: %.2f BPM", bpm)
        for reason, count in self.follower.ignored.items():
            if count and reason not in self.pulses_logged:
                self.pulses_logged.add(reason)
                log.warning("%s", IGNORED_PULSES[reason])

    def _transport(self, time_s: float, msg) -> None:
        """Start, Stop, Continue and Song Position from the clock source, after the pulses before them."""
        self._follow_clock(time_s)
        follower = self.follower
        self.bpm_logged = None  # the tempo is said again once a beat of pulses is heard
        if msg.type == "start":
            log.info("clock: Start; improv counts from the top of the song")
            follower.start(time_s)
        elif msg.type == "continue":
            log.info("clock: Continue")
            follower.proceed(time_s)
        elif msg.type == "stop":
            log.info("clock: Stop; improv's notes released, nothing is played until Start or Continue")
            follower.stop(time_s)
            now = self.clock()
            self._send(self.engine.panic(now), now)  # improv's own notes: the player's play on
            self.held.clear()
        elif msg.type == "songpos":
            follower.song_position(msg.pos)

    def _record_tempo(self, now: float) -> None:
        """The recording carries the session's tempo where improv plays in time, so a DAW imports it
        in time (in free time it has none, as a take played without a click)."""
        if self.recorder is None or not self.config.time.in_time():
            return
        timeline = self.engine.timeline
        bpm, beat = timeline.bpm, timeline.beat_at(now)
        if bpm is not None and beat is not None:
            self.recorder.tempo(now, bpm, beat)

    def _drain_queue(self) -> bool:
        """Move what the callback queued into the bounded backlog; False once asked to stop."""
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return not self._stopping.is_set()
            if item is _STOP:
                self._stopping.set()
                return False
            self.backlog.push(item)

    def _handle(self, raw: RawInput) -> None:
        try:
            msg = parse(raw.data)
        except (ValueError, TypeError) as err:
            self.counts["malformed"] += 1
            log.debug("ignored a malformed MIDI message %s: %s", raw.data, err)
            return
        if msg.type in TRANSPORT_TYPES and self.follower is not None:
            self._transport(raw.at_s if raw.at_s is not None else raw.time_s, msg)
            return
        if msg.type in IGNORED_TYPES:
            return
        if self.echoes.is_echo(raw.data, raw.time_s):
            if self.echoes.count == 1:
                log.warning("improv hears its own notes coming back on its input (its output is routed back "
                            "into it, e.g. a DAW monitoring improv's track): ignoring them (midi.feedback_guard_ms)")
            return
        channels = self.config.midi.input_channels
        if channels is not None and hasattr(msg, "channel") and msg.channel + 1 not in channels:
            return
        log.debug("in  %.3f %s", raw.time_s - self.start_s, msg)
        if msg.type == "control_change" and msg.control != CC_SUSTAIN and self._control(raw.time_s, msg.control,
                                                                                        msg.value):
            return  # improv's own controls (panic, actions, settings) are not passed on
        if msg.type == "program_change" and self.model_files and self._switch_model(raw.time_s, msg.program):
            return  # improv's: not passed on
        if msg.type not in PLAYED_TYPES:
            return
        if self.config.midi.pass_through:
            self.guard.send(list(raw.data))
        if self.recorder is not None:
            if msg.type in ("note_on", "note_off"):
                self.recorder.player(raw.time_s, msg.note, msg.velocity if msg.type == "note_on" else 0)
            else:  # the pedal, bends, aftertouch, other controllers: the take sounds as it was played
                self.recorder.player_message(raw.time_s, raw.data)
        if not (msg.type in ("note_on", "note_off") or (msg.type == "control_change" and msg.control == CC_SUSTAIN)):
            return  # the model hears notes and the pedal only
        if self._inject_fault and msg.type == "note_on" and (self.engine.sent or self.engine.state.generating):
            self._inject_fault = False
            raise RuntimeError(f"fault injected by {FAULT_ENV}")
        self._send(self.engine.on_player(raw.time_s, msg), raw.time_s)

    def _control(self, now: float, control: int, value: int) -> bool:
        """A CC from the player: True if improv used it (panic, an action, a mapped setting); the
        others (mod wheel, expression, ...) go on as played."""
        if control in PANIC_CONTROLS:
            log.info("panic (CC %d): releasing everything", control)
            self.engine.panic(now)
            self.held.clear()  # never sent, never sounding
            self.guard.release_all()
            return True
        action = action_for(self.config, control)
        if action is not None and value < ACTION_PRESSED:
            return True  # a button let go: an action happens once, when it is pressed
        if action == "answer":
            log.info("answer now (CC %d)", control)
            self._send(self.engine.answer_now(now), now)
            return True
        if action == "reset":
            log.info("reset (CC %d): a new piece; the session memory and the model's state start again", control)
            self._send(self.engine.panic(now), now)
            self.engine.forget(now)
            return True
        before = (self.config.engine.enabled, self.config.engine.mode)
        changed = apply_control(self.config, control, value)
        if changed is None:
            return False
        log.info("CC %d = %d: %s -> %s", control, value, *changed)
        if changed[0] == "time.bpm" and self.link is not None:
            self.link.set_bpm(changed[1])  # proposed to the Link session: a peer may propose another
        if (self.config.engine.enabled, self.config.engine.mode) != before:
            self._send(self.engine.panic(now), now)
        return True

    def _open_model(self, path):
        from improv.model import open_stepped

        return open_stepped(path, lambda: self.config.model.style_strength)

    def _switch_model(self, now: float, program: int) -> bool:
        """A Program Change picks the model of that number in model.folder: improv's notes are
        released and the new model goes on from what was heard. False if there is no such model."""
        if program >= len(self.model_files):
            log.info("program %d: no model of that number (%s holds %d; improv models lists them)", program,
                     self.config.model.folder, len(self.model_files))
            return False
        path = self.model_files[program]
        model = self._models.get(path)
        try:
            if model is None:
                model = self._models[path] = (self._load_model or self._open_model)(path)
            self._send(self.engine.switch_model(model, now), now)
        except (ValueError, ImprovError) as err:
            log.error("program %d: cannot play with %s: %s; improv plays on with %s", program, path.name, err,
                      getattr(self.model, "path", "?"))
            return True
        self.model = model
        log.info("program %d: model %s", program, path.name)
        return True

    def _send(self, events: list[NoteEvent], now: float) -> None:
        """Send improv's notes at their due time plus midi.output_offset_ms: a negative offset is
        sent at once (the engine was polled that much ahead); a positive one waits in `held`."""
        offset = self.config.midi.output_offset_ms / 1000
        if offset > 0:
            self.held.extend((event.time_s + offset, event) for event in events)
            self._send_held(now + (self.output.handover_s if self.output is not None else 0.0))
            return
        for event in events:
            self._hand_over(event, event.time_s + offset, now)

    def _send_held(self, until_s: float) -> None:
        """Hand over the held notes due by `until_s` (their order kept)."""
        while self.held and self.held[0][0] <= until_s:
            due_s, event = self.held.popleft()
            self._hand_over(event, due_s, self.clock())

    def _hand_over(self, event: NoteEvent, due_s: float, now: float) -> None:
        self.guard.send(note_bytes(self.guard.channel, event.pitch, event.velocity), due_s)
        if self.recorder is not None:
            self.recorder.improv(event, now)
        log.debug("out %.3f %s", now - self.start_s, event)

    def _check_ports(self, now: float) -> None:
        """A port connected by name that went away: release, keep running, reconnect when it is back."""
        self._next_port_check = now + PORT_CHECK_S
        midi = self.config.midi
        if any(port is not None and port.server_gone() for port in (self.input, self.output)):
            # The client both ports share is gone: both close before either opens again.
            log.error("JACK closed improv's client; improv keeps running and opens its ports again when a "
                      "JACK server is back")
            lost_input, lost_output = self.input is not None, self.output is not None
        else:
            lost_input = self.input is not None and not self.input.still_connected()
            lost_output = self.output is not None and not self.output.still_connected()
        if lost_input:
            log.error("input port %s went away; improv keeps running and reconnects when it is back", self.input.name)
            self.input.close()
            self.input = None
            self._send(self.engine.panic(now), now)
            self.held.clear()
            self.guard.release_all()  # passed-through notes will never get their note-offs now
        if lost_output:
            log.error("output port %s went away; improv keeps running and reconnects when it is back", self.output.name)
            self.engine.panic(now)
            self.guard.sounding.clear()  # those notes went with the port
            self.output.close()
            self.output = self.guard.port = None
        if self.input is None:
            try:
                self.input = self.midi_system.open_input(midi.client_name, midi.input, self.queue.put, self.clock)
                log.info("input port %s is back: listening again", self.input.name)
            except PortError:
                pass
        if self.output is None:
            try:
                self.output = self.guard.port = self.midi_system.open_output(midi.client_name, midi.output, self.clock)
                log.info("output port %s is back: playing again", self.output.name)
            except PortError:
                pass

    def _shutdown(self) -> None:
        sounding = set(self.guard.sounding)
        try:
            self._send(self.engine.stop(self.clock()), self.clock())
        except Exception:
            log.exception("engine error while stopping")
        self.held.clear()
        self.guard.release_all()
        # A JACK cycle that is missed (an xrun) loses that cycle's messages, and the releases above
        # all leave in one cycle: say it all again a few periods later. A second note-off is harmless.
        time.sleep(OUTPUT_DRAIN_S / 2)
        self.guard.sounding |= sounding
        self.guard.release_all()
        time.sleep(OUTPUT_DRAIN_S / 2)  # JACK sends queued messages on its next cycles: let them leave
        if self.recorder is not None:
            self.recorder.close()
            log.info("session recorded to %s", self.recorder.path)
            self._save_memory(memory_path_for(self.recorder.path))
        elif self.engine.memory.contexts:
            log.info("not recording: the session memory is not saved (it is kept beside a recording)")
        # Every note is released and the take is saved: should closing a MIDI client ever hang,
        # exit (with the threads' stacks on stderr) rather than never.
        faulthandler.dump_traceback_later(CLOSE_TIMEOUT_S, exit=True)
        try:
            for port in (self.input, self.output, self.link):
                if port is not None:
                    port.close()
        finally:
            faulthandler.cancel_dump_traceback_later()

    def _save_memory(self, path) -> None:
        """Beside the recording, so the next set can start where this one ended (improv run --memory)."""
        try:
            self.engine.memory.save(path, self.model.vocab.to_json())
            log.info("session memory saved to %s (improv run --memory %s starts from it)", path, path)
        except (OSError, ImprovError) as err:
            log.error("cannot save the session memory to %s: %s", path, err)

    # -- status -----------------------------------------------------------------------------------
    def _tempo_status(self) -> str:
        """The tempo improv keeps, and whose it is; or what it waits for."""
        sync = self.config.time.sync
        timeline = self.engine.timeline
        if sync == "internal":
            return f"{timeline.bpm:.1f} bpm | " if self.config.time.in_time() else ""
        peers = f" ({self.link.peers} peers)" if self.link is not None else ""
        if not timeline.playing:
            return f"{sync}{peers} stopped | "
        return (f"{timeline.bpm:.1f} bpm {sync}{peers} | " if timeline.bpm is not None
                else f"{sync}: no tempo yet | ")

    def status_line(self) -> str:
        steps = sorted(list(self.engine.step_ns)[-512:])
        step = (f"step p50 {steps[len(steps) // 2] / 1e6:.2f} ms p99 {steps[int(len(steps) * 0.99)] / 1e6:.2f} ms"
                if steps else "step -")
        counts = {**self.counts, "dropped": self.backlog.dropped, "echoes": self.echoes.count}
        extra = "".join(f", {k} {v}" for k, v in sorted(counts.items()) if v)
        state = "on" if self.config.engine.enabled else "off"
        key = self.engine.key_status()
        key = f"key {key} | " if key is not None else ""
        if self.model_files:
            key = f"model {getattr(getattr(self.model, 'path', None), 'stem', '?')} | " + key
        return (f"improv {state} | {self.config.engine.mode} | {self._tempo_status()}{key}in {self.engine.notes_in} "
                f"out {self.engine.notes_out} | {step}{extra}")
