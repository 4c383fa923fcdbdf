"""A real JACK server and a real MIDI test client for the tests that are about ports.

Each test run starts its own server (dummy driver, realtime when allowed, a unique name) so runs
never share a graph. Without jackd the tests skip with the reason; with IMPROV_REQUIRE_JACK=1 (set
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
PERIOD_FRAMES, RATE = 64, 48000


def require_jackd() -> str:
    jackd = shutil.which("jackd")
    if jackd is None:
        if os.environ.get("IMPROV_REQUIRE_JACK") == "1":
            pytest.fail("jackd is missing but IMPROV_REQUIRE_JACK=1: install jackd2")
        pytest.skip("jackd is not installed (apt-get install jackd2); the port tests need a real JACK server")
    return jackd


class JackServer:
    def __init__(self):
        jackd = require_jackd()
        self.name = f"improv-test-{os.getpid()}-{time.monotonic_ns() % 10**9}"
        self.env = {**os.environ, "JACK_DEFAULT_SERVER": self.name, "JACK_NO_AUDIO_RESERVATION": "1",
                    "JACK_NO_START_SERVER": "1"}
        self.log = open(f"/tmp/{self.name}.log", "w")
        for realtime in (["-R"], ["-r"]):  # realtime if the machine allows it, else --no-realtime
            self.process = subprocess.Popen([jackd, "-n", self.name, *realtime, "-d", "dummy", "-r", str(RATE),
                                             "-p", str(PERIOD_FRAMES)], env=self.env, stdout=self.log,
                                            stderr=subprocess.STDOUT)
            if self._wait_ready():
                self.realtime = realtime == ["-R"]
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


class MidiClient:
    """The test's keyboard and synth: plays into improv's input, records improv's output with times."""

    def __init__(self, name: str = "tester"):
        import rtmidi

        self.rtmidi = rtmidi
        self.out = rtmidi.MidiOut(rtapi=rtmidi.API_UNIX_JACK, name=f"{name}-keys")
        self.inp = rtmidi.MidiIn(rtapi=rtmidi.API_UNIX_JACK, name=f"{name}-synth")
        self.received: list[tuple[float, list[int]]] = []  # appended by the MIDI thread (atomic under the GIL)
        self._drained = 0
        self.inp.set_callback(lambda event, _: self.received.append((time.monotonic(), event[0])))

    def connect(self, to_port: str = "improv-in", from_port: str = "improv-out", timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            outs = [i for i, p in enumerate(self.out.get_ports()) if p.startswith(to_port)]
            ins = [i for i, p in enumerate(self.inp.get_ports()) if p.startswith(from_port)]
            if outs and ins:
                self.out.open_port(outs[0])
                self.inp.open_port(ins[0])
                return
            time.sleep(0.1)
        raise AssertionError(f"improv's ports {to_port}/{from_port} did not appear in {timeout_s} s")

    def send(self, *data: int) -> float:
        self.out.send_message(list(data))
        return time.monotonic()

    def play(self, pitches, note_s: float = 0.15, gap_s: float = 0.05, velocity: int = 90) -> float:
        """Play a phrase in real time; returns the time of the last key up."""
        last_up = time.monotonic()
        for pitch in pitches:
            self.send(0x90, pitch, velocity)
            time.sleep(note_s)
            last_up = self.send(0x80, pitch, 0)
            time.sleep(gap_s)
        return last_up

    def pending(self) -> list[tuple[float, list[int]]]:
        """What arrived since the last drain, without consuming it."""
        return self.received[self._drained :]

    def drain(self) -> list[tuple[float, list[int]]]:
        out = self.received[self._drained :]
        self._drained += len(out)
        return out

    def close(self) -> None:
        for port in (self.out, self.inp):
            port.close_port()
            port.delete()


def note_ons(events):
    return [(t, m) for t, m in events if m[0] & 0xF0 == 0x90 and m[2] > 0]


def sounding_after(events) -> set[int]:
    """Pitches left sounding after these events (note-on without a later note-off)."""
    sounding = set()
    for _, m in events:
        kind = m[0] & 0xF0
        if kind == 0x90 and m[2] > 0:
            sounding.add(m[1])
        elif kind in (0x80, 0x90):
            sounding.discard(m[1])
        elif kind == 0xB0 and m[1] in (120, 123):
            sounding.clear()
    return sounding


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
