"""A real JACK server for the tests that are about ports, and improv run as a real process.

Each test module starts its own server (dummy driver, realtime when allowed, the first free name of
improv-test-0..7, see `improv.tools.jackd.start_jackd`) so runs never share a graph. The period is 512
frames (10.7 ms at 48 kHz; IMPROV_TEST_JACK_PERIOD changes it): on these shared 2-core VMs JACK
misses cycles (xruns) when the VM wakes it late, and a missed cycle loses, repeats or garbles that
cycle's MIDI. Playing a 23 s file to a listener, 256 frames missed 67 to 875 cycles a run and
garbled notes in about half the runs (with python-rtmidi's client and improv's own alike); 512
frames missed 2 to 6 and garbled none; 1024 frames missed none. `improv bench` measures at 64 frames; these tests check
behaviour. Without jackd the tests skip with the reason; with IMPROV_REQUIRE_JACK=1 (set by
.ci/run, which installs jackd2) a missing jackd is a failure instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import wait_for
from improv.tools.probe import note_ons

ROOT = Path(__file__).parent.parent
PERIOD_FRAMES, RATE = int(os.environ.get("IMPROV_TEST_JACK_PERIOD", "512")), 48000


def require_jackd() -> str:
    from improv.midi import jack as jackmidi

    jackd = shutil.which("jackd")
    if jackd is None:
        if os.environ.get("IMPROV_REQUIRE_JACK") == "1":
            pytest.fail("jackd is missing but IMPROV_REQUIRE_JACK=1: install jackd2")
        pytest.skip("jackd is not installed (apt-get install jackd2); the port tests need a real JACK server")
    if not jackmidi.available():  # the tests' keyboard and synth are improv's own native clients
        if os.environ.get("IMPROV_REQUIRE_JACK") == "1":
            pytest.fail("improv's native JACK client is not built but IMPROV_REQUIRE_JACK=1: pip install -e . with gcc")
        pytest.skip("improv's native JACK client is not built (it needs a C compiler at install); the port tests "
                    "play and listen through it")
    return jackd


class JackServer:
    started: list["JackServer"] = []

    @classmethod
    def xruns_so_far(cls) -> int:
        return sum(server.xruns() for server in cls.started)

    def __init__(self):
        require_jackd()
        from improv.tools.jackd import start_jackd

        self.log_path = Path(f"/tmp/improv-test-{os.getpid()}-{time.monotonic_ns() % 10**9}.log")
        self.log = open(self.log_path, "w")
        started = start_jackd("improv-test", PERIOD_FRAMES, log=self.log)
        if started is None:
            pytest.fail(f"jackd did not start; see {self.log_path}")
        self.process, self.name, self.realtime = started
        JackServer.started.append(self)
        os.environ.update({"JACK_DEFAULT_SERVER": self.name, "JACK_NO_AUDIO_RESERVATION": "1",
                           "JACK_NO_START_SERVER": "1"})

    @property
    def period_ms(self) -> float:
        return PERIOD_FRAMES / RATE * 1000

    def xruns(self) -> int:
        """Cycles the server has reported missed so far (JACK logs each late client as an XRun)."""
        try:
            return self.log_path.read_text(errors="replace").count("XRun")
        except OSError:
            return 0

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()

    def restart(self) -> None:
        """A new server under the same name, after stop(): as a user restarting JACK would."""
        from improv.tools.jackd import launch_jackd

        self.log = open(self.log_path, "a")
        launched = launch_jackd(self.name, PERIOD_FRAMES, log=self.log)
        if launched is None:
            pytest.fail(f"jackd did not start again; see {self.log_path}")
        self.process, self.realtime = launched


def answers(client, silence_ms: int, pitches=(60, 64, 67, 72)) -> bool:
    """Play a phrase, wait for the answer, stop it with a key; True if improv answered."""
    client.drain()
    client.play(pitches, note_s=0.1, gap_s=0.03)
    wait_for(lambda: note_ons(client.pending()), timeout_s=silence_ms / 1000 + 3.0)
    client.send(0xB0, 123, 0)
    time.sleep(0.1)
    return bool(note_ons(client.drain()))


def launch_improv(client, *args: str, env=None) -> subprocess.Popen:
    """improv run as a real process, with `client` (an improv.tools.probe.ProbeClient) connected to its ports."""
    process = start_improv(*args, env=env)
    try:
        client.connect()
    except Exception:
        process.kill()
        raise AssertionError(f"improv did not start: {process.communicate()[1][-2000:]}")
    return process


def start_improv(*args: str, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "improv.cli", "run", "--backend", "jack", *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop_improv(process: subprocess.Popen, sig=signal.SIGTERM, timeout_s: float = 10.0) -> tuple[int, str]:
    if process.poll() is None:
        process.send_signal(sig)
    try:
        _, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
    return process.returncode, stderr
