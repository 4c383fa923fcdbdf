"""Ableton Link (time.sync: link): two peers on this machine agree on tempo, beat and transport;
the Timeline's arithmetic on Link's own session state, in-process; the install hint without aalink.

Link finds its peers by multicast on every IPv4 interface that is up. The two-peer test runs its
two peers (two processes) in a network namespace of their own that holds only a loopback interface:
there they find each other, and nothing they send leaves this machine. Where no namespace can be
made (neither as root nor in a user namespace), it skips and says so; IMPROV_REQUIRE_LINK=1 makes a
skip for that or for a missing aalink a failure. Run as a script, this file is those processes.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import socket
import statistics
import struct
import subprocess
import sys
import time

import pytest

from conftest import ROOT, wait_for

QUANTUM = 4.0  # a 4/4 bar
LEADER_BPM, FOLLOWER_BPM, PROPOSED_BPM = 120.0, 100.0, 133.0
SESSION_TIMEOUT_S = 90.0  # the whole two-peer run takes about 10 s
ANSWER_TIMEOUT_S = 15.0  # a peer's answer to one request (sampling takes 3 s of it)
DISCOVERY_TIMEOUT_S = 10.0  # Link announces itself every 250 ms (a change within 50 ms): peers meet in a second
SAMPLES, SAMPLE_STEP_S = 31, 0.1  # the beat compared at 31 moments over 3 s


def require_aalink():
    try:
        import aalink  # noqa: F401
    except ImportError:
        if os.environ.get("IMPROV_REQUIRE_LINK") == "1":
            pytest.fail("aalink is missing but IMPROV_REQUIRE_LINK=1: pip install -e '.[link]'")
        pytest.skip("Link needs aalink: pip install -e '.[link]'")


# -- two peers in two processes ------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_peers():
    """The figures of one two-peer run (see `session`), or a skip saying why Link cannot run here."""
    require_aalink()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, __file__, "session"], capture_output=True, text=True,
                         timeout=SESSION_TIMEOUT_S, cwd=ROOT, env=env)
    lines = run.stdout.strip().splitlines()
    assert run.returncode == 0 and lines, f"the two-peer run failed:\n{run.stdout}\n{run.stderr}"
    result = json.loads(lines[-1])
    if "cannot" in result:
        if os.environ.get("IMPROV_REQUIRE_LINK") == "1":
            pytest.fail(f"{result['cannot']}, and IMPROV_REQUIRE_LINK=1")
        pytest.skip(result["cannot"])
    return result


def test_two_peers_on_this_machine_find_each_other(two_peers):
    assert two_peers["peers"] == [1, 1]


def test_a_proposed_tempo_reaches_the_other_peer(two_peers):
    leader_bpm, follower_bpm = two_peers["bpm"]
    assert leader_bpm == pytest.approx(PROPOSED_BPM, abs=1e-3)
    assert follower_bpm == pytest.approx(PROPOSED_BPM, abs=1e-3)
    assert two_peers["tempo_reached_s"] < 1.0


def test_two_peers_agree_on_the_beat_within_a_millisecond(two_peers):
    """The same moment, asked of both peers: the beats differ by less than 1 ms of music. Not just
    the phase in the bar: both count from the transport's start."""
    assert two_peers["beat_ms_max"] < 1.0
    assert two_peers["phase_ms_max"] < 1.0


def test_the_beats_count_from_the_transports_start(two_peers):
    """With peers, Link puts beat 0 on the first bar line at or after the start: sampled 0.3 s
    after it, the beat is 0.66 on, or up to a bar less (a count-in)."""
    assert -QUANTUM < two_peers["first_beat"] <= 0.3 * PROPOSED_BPM / 60.0 + 0.01


def test_stop_and_start_reach_the_other_peer(two_peers):
    assert two_peers["stop_reached_s"] < 1.0
    assert two_peers["start_reached_s"] < 1.0


# -- one timeline, in-process, on Link's own session state (no network: join=False) ---------------
@pytest.fixture
def timeline():
    require_aalink()
    from improv.link import LinkTimeline

    with LinkTimeline(120.0, QUANTUM, join=False) as timeline:
        yield timeline


READING_BEATS = 1e-4  # two readings of Link's state differ by its microsecond and their brackets: 50 us at 120 bpm


def test_beat_at_and_time_of_beat_are_inverse_and_move_at_the_tempo(timeline):
    now_s = time.monotonic()
    assert timeline.bpm == 120.0 and timeline.peers == 0 and timeline.playing
    assert timeline.beat_at(now_s + 1.0) - timeline.beat_at(now_s) == pytest.approx(2.0, abs=READING_BEATS)
    for beat in (timeline.beat_at(now_s), 0.0, 7.25, 1000.0):
        assert timeline.beat_at(timeline.time_of_beat(beat)) == pytest.approx(beat, abs=READING_BEATS)


def test_the_beat_is_links_own_on_improvs_clock(timeline):
    """Link's clock is CLOCK_MONOTONIC_RAW, not time.monotonic(); beat_at maps between them. Link's
    own beat, read between two reads of improv's clock, is the beat_at of the moment between them."""
    before_s = time.monotonic()
    link_beat = timeline.link.beat
    after_s = time.monotonic()
    slack_beats = (after_s - before_s) * 2.0 + 1e-5  # the bracket at 120 bpm, and Link's microsecond
    assert timeline.beat_at((before_s + after_s) / 2) == pytest.approx(link_beat, abs=slack_beats)


def test_a_proposed_tempo_keeps_the_beat_where_it_was(timeline):
    """Link changes the tempo at the moment it is proposed, with the beat where it was then."""
    before_s = time.monotonic()
    beat_before = timeline.beat_at(before_s)
    timeline.set_bpm(PROPOSED_BPM)
    after_s = time.monotonic()
    assert timeline.bpm == PROPOSED_BPM
    slack_beats = (after_s - before_s) * (PROPOSED_BPM - 120.0) / 60.0 + READING_BEATS  # the change fell in there
    assert timeline.beat_at(before_s) == pytest.approx(beat_before, abs=slack_beats)
    assert timeline.beat_at(before_s + 60.0) - timeline.beat_at(before_s) == pytest.approx(PROPOSED_BPM, abs=1e-3)


def test_the_transport_start_is_beat_zero_and_a_stop_stops(timeline):
    timeline.link.force_beat(100.0)  # far from 0, so that the count starting again shows
    before_s = time.monotonic()
    timeline.link.playing = True  # as a peer's start would (alone, Link starts at once, not at the bar)
    after_s = time.monotonic()
    assert wait_for(lambda: timeline.beat_at(time.monotonic()) < 50.0, timeout_s=2.0)
    # Beat 0 fell between the two reads: at 120 bpm, two beats a second.
    assert -(after_s - before_s) * 2.0 - READING_BEATS <= timeline.beat_at(before_s) <= READING_BEATS
    assert timeline.playing
    timeline.link.playing = False
    assert wait_for(lambda: not timeline.playing, timeout_s=2.0)
    timeline.link.playing = True
    assert wait_for(lambda: timeline.playing, timeout_s=2.0)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc (Linux)")
def test_close_leaves_no_thread_behind():
    """The loop thread and Link's own threads (which Python does not list) all end."""
    require_aalink()
    from improv.link import LinkTimeline

    def threads() -> set[str]:
        return set(os.listdir("/proc/self/task"))

    threads_before = threads()
    timeline = LinkTimeline(120.0, QUANTUM, join=False)
    assert threads() - threads_before
    timeline.close()
    timeline.close()
    assert wait_for(lambda: not threads() - threads_before, timeout_s=2.0)


def test_without_aalink_the_error_says_how_to_install_it(monkeypatch):
    from improv.errors import ConfigError
    from improv.link import LinkTimeline

    monkeypatch.setitem(sys.modules, "aalink", None)  # `import aalink` now raises ImportError
    with pytest.raises(ConfigError) as raised:
        LinkTimeline(120.0, QUANTUM)
    message = str(raised.value)
    assert "pip install 'improv[link]'" in message and "\n" not in message


def beat_at_cost_us(timeline, calls: int = 2000, rounds: int = 5) -> float:
    """The median over `rounds` of the mean time of one beat_at call, in microseconds."""
    per_call_us = []
    for _ in range(rounds):
        start_s = time.perf_counter()
        for _ in range(calls):
            timeline.beat_at(start_s)
        per_call_us.append((time.perf_counter() - start_s) / calls * 1e6)
    return statistics.median(per_call_us)


# -- the processes: `session` makes the namespace and drives two `peer`s ---------------------------
CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def enter_private_network() -> str | None:
    """Move this process into a new network namespace and bring its loopback up: None, or why not.
    Root may make one; otherwise a user namespace gives the rights inside it, where the kernel allows."""
    if not sys.platform.startswith("linux"):
        return f"the two-peer test makes a Linux network namespace; this is {sys.platform}"
    import fcntl

    libc = ctypes.CDLL(None, use_errno=True)
    refusals = []
    for name, flags in (("unshare(CLONE_NEWNET)", CLONE_NEWNET),
                        ("unshare(CLONE_NEWUSER|CLONE_NEWNET)", CLONE_NEWUSER | CLONE_NEWNET)):
        if libc.unshare(flags) == 0:
            break
        refusals.append(f"{name}: {os.strerror(ctypes.get_errno())}")
    else:
        return ("cannot make a private network namespace for Link's multicast (" + "; ".join(refusals)
                + "): Link would announce itself on this machine's real network")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(probe, SIOCGIFFLAGS, request)[:18])[1]
        fcntl.ioctl(probe, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))
    return None


class Peer:
    """A `peer` process: one request a line on its stdin, one JSON answer a line on its stdout."""

    def __init__(self, name: str, bpm: float):
        self.name = name
        self.process = subprocess.Popen([sys.executable, __file__, "peer", str(bpm)], text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def ask(self, request: str):
        self.send(request)
        return self.answer()

    def send(self, request: str) -> None:
        self.process.stdin.write(request + "\n")
        self.process.stdin.flush()

    def answer(self):
        ready, _, _ = select.select([self.process.stdout], [], [], ANSWER_TIMEOUT_S)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            gone = self.process.poll()
            raise RuntimeError(f"the {self.name} exited ({gone})" if gone is not None
                               else f"the {self.name} did not answer within {ANSWER_TIMEOUT_S} s")
        return json.loads(line)

    def wait_for(self, condition, timeout_s: float = 2.0) -> float:
        """Seconds until the peer's state meets `condition`; an error after `timeout_s`."""
        start_s = time.monotonic()
        while time.monotonic() - start_s < timeout_s:
            if condition(self.ask("state")):
                return time.monotonic() - start_s
            time.sleep(0.01)
        raise RuntimeError(f"the {self.name} never reached it: {self.ask('state')}")

    def close(self) -> None:
        self.process.stdin.close()  # the peer leaves on end of input
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()


def session() -> dict:
    """Two peers join; the leader proposes 133 BPM, starts, stops and starts the transport (as a
    DAW would); both are asked the beat at the same 31 moments."""
    cannot = enter_private_network()
    if cannot:
        return {"cannot": cannot}
    leader, follower = Peer("leader", LEADER_BPM), Peer("follower", FOLLOWER_BPM)
    try:
        for peer in (leader, follower):
            peer.wait_for(lambda state: state["peers"] == 1, timeout_s=DISCOVERY_TIMEOUT_S)
        leader.ask(f"bpm {PROPOSED_BPM}")
        tempo_reached_s = follower.wait_for(lambda state: abs(state["bpm"] - PROPOSED_BPM) < 1e-3)
        leader.ask("play 1")
        follower.wait_for(lambda state: state["link_playing"])
        leader.ask("play 0")
        stop_reached_s = follower.wait_for(lambda state: not state["playing"])
        leader.ask("play 1")
        start_reached_s = follower.wait_for(lambda state: state["playing"])
        first_s = time.monotonic() + 0.3
        for peer in (leader, follower):  # both sample at once
            peer.send(f"sample {first_s!r} {SAMPLE_STEP_S} {SAMPLES}")
        leader_beats, follower_beats = leader.answer(), follower.answer()
        states = [peer.ask("state") for peer in (leader, follower)]
        cost_us = follower.ask("cost")
    finally:
        leader.close()
        follower.close()
    ms_per_beat = 60_000.0 / PROPOSED_BPM
    beat_ms = [abs(a - b) * ms_per_beat for a, b in zip(leader_beats, follower_beats)]
    phase_ms = [abs(_wrap(a - b, QUANTUM)) * ms_per_beat for a, b in zip(leader_beats, follower_beats)]
    return {"peers": [state["peers"] for state in states], "bpm": [state["bpm"] for state in states],
            "tempo_reached_s": tempo_reached_s, "stop_reached_s": stop_reached_s,
            "start_reached_s": start_reached_s, "beat_ms_max": max(beat_ms),
            "beat_ms_mean": statistics.fmean(beat_ms), "phase_ms_max": max(phase_ms),
            "beat_at_us": cost_us, "first_beat": leader_beats[0]}


def _wrap(beats: float, quantum: float) -> float:
    """`beats` moved by whole bars into -quantum/2..quantum/2: the difference in phase."""
    return beats - quantum * round(beats / quantum)


def peer(bpm: float) -> None:
    """A LinkTimeline that answers the session's requests until its stdin ends."""
    from improv.link import LinkTimeline

    with LinkTimeline(bpm, QUANTUM) as timeline:
        for line in sys.stdin:
            verb, *args = line.split()
            if verb == "state":
                answer = {"peers": timeline.peers, "bpm": timeline.bpm, "playing": timeline.playing,
                          "link_playing": timeline.link.playing}
            elif verb == "bpm":
                answer = timeline.set_bpm(float(args[0]))
            elif verb == "play":
                timeline.link.playing = args[0] == "1"
                answer = None
            elif verb == "sample":
                first_s, step_s, count = float(args[0]), float(args[1]), int(args[2])
                answer = []
                for k in range(count):
                    moment_s = first_s + k * step_s
                    time.sleep(max(0.0, moment_s - time.monotonic()))
                    answer.append(timeline.beat_at(moment_s))
            elif verb == "cost":
                answer = beat_at_cost_us(timeline)
            print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "session":
        print(json.dumps(session()), flush=True)
    else:
        peer(float(sys.argv[2]))


def test_the_engine_puts_its_onsets_on_the_link_sessions_eighths(shipped_model):
    # Link's own session state, in-process (join=False): improv's answer sits on Link's beat.
    import numpy as np

    from improv.config import Config
    from improv.engine import Engine
    from improv.events import Msg
    from improv.offline import VirtualClock, perform, run_until

    require_aalink()
    from improv.link import LinkTimeline

    config = Config()
    config.time.sync, config.time.grid, config.time.start_on = "link", "1/8", "beat"
    with LinkTimeline(100.0, 4.0, join=False) as timeline:
        clock = VirtualClock(time.monotonic())
        engine = Engine(shipped_model, config, clock.now(), np.random.default_rng(1), timeline=timeline)
        start = clock.now()
        played = [(start + 0.2 * i + dt, Msg(kind, pitch, velocity)) for i, pitch in enumerate((60, 64, 67, 72))
                  for dt, kind, velocity in ((0.0, "note_on", 80), (0.1, "note_off", 0))]
        perform(engine, clock, played)
        events = run_until(engine, clock, start + 8.0)  # answers have their rests: enough onsets to check
        beats = [timeline.beat_at(e.time_s) for e in events if e.is_on]
    assert len(beats) > 4
    assert all(abs(beat * 2 - round(beat * 2)) < 1e-3 for beat in beats), beats
