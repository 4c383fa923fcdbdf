"""A flood run: `improv run` through JACK fed note-ons and note-offs as fast as asked, and what it cost.

    python -m improv.tools.flood --seconds 20 --rate 9000 [--no-record] [--json]

Starts a private JACK server if none runs, then `improv run --backend jack` recording into a
temporary folder (or with --no-record), connects a probe to its ports and plays note-on/note-off
pairs into improv:in at `--rate` messages a second. Reported: the daemon's resident memory (VmRSS)
when idle, after a short warm-up flood (`--warmup-s`, so that one-time costs such as the backlog
filling up for the first time are not counted as growth) and after the flood, each reading taken
`--settle-s` after a flood; its anonymous part (RssAnon: without library code paged in on first use)
the same way; VmRSS every 2 s during the flood; the messages sent and the rate achieved (the probe's
queue, 4096 messages, is waited on when full); the session file's size and the player notes it
holds (what the daemon handled: beyond its bounded backlog, a flood is shed).

The session memory learns what it hears up to memory.max_contexts contexts, some 45 MB at the default
100,000, reached within seconds of a flood: `--memory-contexts 1000` takes it out of the measure when
the rest of the daemon is measured. A developer tool: `improv run` never imports it.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from improv.errors import PortError
from improv.tools.jackd import jack_running, start_private_jack
from improv.tools.probe import ProbeClient
from improv.tools.procstat import process_rss_mib, status_mib

FULL_WAIT_S = 0.001  # the probe's queue is full: wait this long, then go on
TICK_S = 0.0005  # the sender's pacing step
# After a flood, before a reading: the backlog drains and improv answers (0.5 s of silence, then up to
# 6 s of answer at the default settings), so that the answer's one-time costs fall before the reading.
SETTLE_S = 8.0
CONNECT_TIMEOUT_S = 30.0


def _message(index: int) -> tuple[int, int, int]:
    """The index-th message of the flood: note-on/note-off pairs over five octaves, varied velocities."""
    pitch = 36 + (index // 2) % 60
    if index % 2 == 0:
        return 0x90, pitch, 1 + (index // 2 * 37) % 126
    return 0x80, pitch, 0


class Flooder:
    """Sends the flood at a steady rate; counts what the probe took and how often its queue was full."""

    def __init__(self, client: ProbeClient, rate: float, sample=None, sample_every_s: float = 2.0):
        self.client, self.rate = client, rate
        self.sent = 0
        self.full = 0
        self.sample, self.sample_every_s = sample, sample_every_s  # called every sample_every_s while pouring
        self.samples: list[tuple[float, float]] = []  # (seconds into the flood, sample())

    def pour(self, seconds: float) -> tuple[int, float]:
        """Flood for `seconds`; returns (messages sent, seconds taken). The rate is a ceiling: when the
        probe's queue is full the sender waits a little and goes on, and does not make up later
        (in a burst) what could not leave."""
        sent_before, started = self.sent, time.monotonic()
        offset = self.sent  # due by now: offset + elapsed * rate
        self.samples, next_sample = [], 0.0
        while (elapsed := time.monotonic() - started) < seconds:
            if self.sample is not None and elapsed >= next_sample:
                self.samples.append((round(elapsed, 1), self.sample()))
                next_sample += self.sample_every_s
            due, blocked = offset + int(elapsed * self.rate), False
            while self.sent < due:
                try:
                    self.client.send(*_message(self.sent))
                except PortError:  # the probe's own queue is full
                    self.full, blocked = self.full + 1, True
                    break
                self.sent += 1
            if blocked:
                time.sleep(FULL_WAIT_S)
                offset = self.sent - int((time.monotonic() - started) * self.rate)
            else:
                time.sleep(TICK_S)
        took_s = time.monotonic() - started
        self.client.last_sent_s(timeout_s=1.0)  # let what is still queued leave
        return self.sent - sent_before, took_s


def _stop(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def _player_messages(path: Path) -> int | None:
    """Note messages on the session file's first track (the player's), or None if it cannot be read."""
    import mido

    try:
        return sum(1 for m in mido.MidiFile(path).tracks[0] if m.type in ("note_on", "note_off"))
    except (OSError, EOFError, ValueError, KeyError, IndexError):
        return None


def flood(seconds: float, rate: float, record: bool = True, warmup_s: float = 2.0, settle_s: float = SETTLE_S,
          flush_s: float | None = None, model: str | None = None, folder: str | Path | None = None,
          memory_contexts: int | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="improv-flood-") as scratch:
        sessions = Path(folder) if folder is not None else Path(scratch) / "sessions"
        config = Path(scratch) / "flood.yaml"
        recording = f"folder: {json.dumps(str(sessions))}" + (f", flush_s: {flush_s}" if flush_s else "")
        config.write_text(f"recording: {{{recording}}}\n"
                          + (f"memory: {{max_contexts: {memory_contexts}}}\n" if memory_contexts else ""))
        log_path = Path(scratch) / "improv.log"
        args = [sys.executable, "-m", "improv.cli", "run", "--backend", "jack", "--config", str(config)]
        args += (["--model", model] if model else []) + ([] if record else ["--no-record"])
        client = ProbeClient("flood")
        with open(log_path, "w") as log:
            daemon = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        try:
            try:
                client.connect(timeout_s=CONNECT_TIMEOUT_S)
            except PortError as err:
                raise RuntimeError(f"improv run did not start: {err}\n{log_path.read_text()[-2000:]}") from err
            time.sleep(1.0)
            rss_idle, anon_idle = process_rss_mib(daemon.pid), status_mib(daemon.pid, "RssAnon")
            flooder = Flooder(client, rate, sample=lambda: round(process_rss_mib(daemon.pid), 2))
            if warmup_s > 0:
                flooder.pour(warmup_s)
                time.sleep(settle_s)
            rss_before, anon_before = process_rss_mib(daemon.pid), status_mib(daemon.pid, "RssAnon")
            flood_started = time.monotonic()
            sent, took_s = flooder.pour(seconds)
            timeline = flooder.samples
            settle_end = time.monotonic() + settle_s
            while (left := settle_end - time.monotonic()) > 0:  # the backlog drains, improv may answer
                time.sleep(min(0.5, left))
                timeline.append((round(time.monotonic() - flood_started, 1), round(process_rss_mib(daemon.pid), 2)))
            rss_after, anon_after = process_rss_mib(daemon.pid), status_mib(daemon.pid, "RssAnon")
            alive = daemon.poll() is None
        finally:
            exit_code = _stop(daemon)
            client.close()
        files = sorted(sessions.glob("*.mid")) if record else []
        size = files[-1].stat().st_size if files else None
        return {
            "seconds": seconds, "rate": rate, "record": record, "warmup_s": warmup_s,
            "memory_contexts": memory_contexts,
            "messages_sent": sent, "messages_per_s": round(sent / took_s) if took_s > 0 else None,
            "messages_sent_with_warmup": flooder.sent, "probe_queue_full": flooder.full,
            "rss_idle_mib": round(rss_idle, 2), "rss_before_mib": round(rss_before, 2),
            "rss_after_mib": round(rss_after, 2), "rss_growth_mib": round(rss_after - rss_before, 2),
            "rss_growth_from_idle_mib": round(rss_after - rss_idle, 2),
            "rss_anon_growth_mib": round(anon_after - anon_before, 2),
            "rss_anon_growth_from_idle_mib": round(anon_after - anon_idle, 2),
            "settle_s": settle_s,
            "rss_timeline_mib": timeline,  # (seconds into the flood, resident MiB): every 2 s, then 0.5 s
            "session_file": str(files[-1]) if files and folder is not None else None,
            "session_file_bytes": size,
            "session_player_messages": _player_messages(files[-1]) if files else None,
            "alive_after_flood": alive, "exit_code": exit_code,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the flood (default: 20)")
    parser.add_argument("--rate", type=float, default=9000.0, help="messages a second to send (default: 9000)")
    parser.add_argument("--no-record", action="store_true", help="run improv with --no-record")
    parser.add_argument("--warmup-s", type=float, default=2.0,
                        help="flood this long before the 'before' reading (default: 2; 0 for none)")
    parser.add_argument("--settle-s", type=float, default=SETTLE_S,
                        help=f"wait this long after each flood before reading the memory (default: {SETTLE_S:g})")
    parser.add_argument("--flush-s", type=float, help="recording.flush_s for the daemon (default: its own)")
    parser.add_argument("--memory-contexts", type=int,
                        help="memory.max_contexts for the daemon (default: its own): the session memory grows "
                             "with what it hears up to this many contexts, so a small value takes it out of "
                             "the growth measured")
    parser.add_argument("--folder", help="record here and keep the file (default: a temporary folder)")
    parser.add_argument("--model", help="an exported .onnx (default: the shipped model)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args(argv)
    jack = start_private_jack() if not jack_running() else None
    if not jack_running():
        print("improv flood: error: no JACK server runs and none could be started (is jackd installed?)",
              file=sys.stderr)
        return 1
    try:
        result = flood(args.seconds, args.rate, record=not args.no_record, warmup_s=args.warmup_s,
                       settle_s=args.settle_s, flush_s=args.flush_s, model=args.model, folder=args.folder,
                       memory_contexts=args.memory_contexts)
    finally:
        if jack is not None:
            jack.terminate()
            jack.wait()
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0 if result["alive_after_flood"] and result["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
