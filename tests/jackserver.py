"""A real JACK server for the tests that are about ports, and improv run as a real process.

Each test module starts its own server (dummy driver, realtime when allowed, a unique name) so runs
never share a graph. The period is 256 frames (5.3 ms at 48 kHz; IMPROV_TEST_JACK_PERIOD changes it):
on these shared 2-core VMs a 64-frame period makes JACK miss cycles (xruns) several times a second
even with an idle client, and a missed cycle loses or repeats that cycle's MIDI. `improv bench`
measures at 64 frames; these tests check behaviour. Without jackd the tests skip with the reason; with IMPROV_REQUIRE_JACK=1 (set
by .ci/run, which installs jackd2) a missing jackd is a failure instead.
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

ROOT = Path(__file__).parent.parent
PERIOD_FRAMES, RATE = int(os.environ.get("IMPROV_TEST_JACK_PERIOD", "256")), 48000


def require_jackd() -> str:
    jackd = shutil.which("jackd")
    if jackd is None:
        if os.environ.get("IMPROV_REQUIRE_JACK") == "1":
            pytest.fail("jackd is missing but IMPROV_REQUIRE_JACK=1: install jackd2")
        pytest.skip("jackd is not installed (apt-get install jackd2); the port tests need a real JACK server")
    return jackd


class JackServer:
    started: list["JackServer"] = []

    @classmethod
    def xruns_so_far(cls) -> int:
        return sum(server.xruns() for server in cls.started)

    def __init__(self):
        jackd = require_jackd()
        self.name = f"improv-test-{os.getpid()}-{time.monotonic_ns() % 10**9}"
        self.env = {**os.environ, "JACK_DEFAULT_SERVER": self.name, "JACK_NO_AUDIO_RESERVATION": "1",
                    "JACK_NO_START_SERVER": "1"}
        self.log_path = Path(f"/tmp/{self.name}.log")
        self.log = open(self.log_path, "w")
        for realtime in (["-R"], ["-r"]):  # realtime if the machine allows it, else --no-realtime
            self.process = subprocess.Popen([jackd, "-n", self.name, *realtime, "-d", "dummy", "-r", str(RATE),
                                             "-p", str(PERIOD_FRAMES)], env=self.env, stdout=self.log,
                                            stderr=subprocess.STDOUT)
            if self._wait_ready():
                self.realtime = realtime == ["-R"]
                JackServer.started.append(self)
                break
            self.process.kill()
            self.process.wait()
        else:
            pytest.fail(f"jackd did not start; see /tmp/{self.name}.log")
        os.environ.update({k: self.env[k] for k in ("JACK_DEFAULT_SERVER", "JACK_NO_AUDIO_RESERVATION",
                                                    "JACK_NO_START_SERVER")})

    @property
    def period_ms(self) -> float:
        return PERIOD_FRAMES / RATE * 1000

    def xruns(self) -> int:
        """Cycles the server has reported missed so far (JACK logs each late client as an XRun)."""
        try:
            return self.log_path.read_text(errors="replace").count("XRun")
        except OSError:
            return 0

    def _wait_ready(self, timeout_s: float = 5.0) -> bool:
        probe = ("import rtmidi,sys\ntry:\n rtmidi.MidiOut(rtapi=rtmidi.API_UNIX_JACK, name='probe')\n"
                 "except Exception:\n sys.exit(1)")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if subprocess.run([sys.executable, "-c", probe], env=self.env, capture_output=True).returncode == 0:
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def launch_improv(client, *args: str, env=None) -> subprocess.Popen:
    """improv run as a real process, with `client` (an improv.ports.ProbeClient) connected to its ports."""
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
