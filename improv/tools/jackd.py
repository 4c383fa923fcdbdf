"""Private JACK servers for the benchmark, the soak and the tests: the dummy driver, realtime where
the machine allows it, on a server name of their own."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

from improv.errors import PortError
from improv.midi.backend import choose_backend
from improv.midi.jack import jack_period_ms

JACK_PERIOD_FRAMES, JACK_RATE = 64, 48000
JACK_NAME_SLOTS = 8  # jackd's limit on servers registered at once (MAX_SERVERS)


# -- the real daemon through JACK ------------------------------------------------------------------
def jack_running() -> bool:
    try:
        return choose_backend("jack") == "jack"
    except PortError:
        return False

def start_jackd(prefix: str, period_frames: int = JACK_PERIOD_FRAMES, log=subprocess.DEVNULL,
                ready_s: float = 5.0) -> tuple[subprocess.Popen, str, bool] | None:
    """A JACK server with the dummy driver, realtime when the machine allows it, named `prefix-N` for
    the first N no live server uses. Returns (process, name, realtime), or None.

    Names come from a small pool rather than being unique: JACK has JACK_NAME_SLOTS server slots, and
    a server that was killed keeps its slot until a server of the same name starts again."""
    for slot in range(JACK_NAME_SLOTS):
        name = f"{prefix}-{slot}"
        if jack_period_ms(name) is not None:
            continue  # a live server has this name
        launched = launch_jackd(name, period_frames, log, ready_s)
        if launched is not None:
            return launched[0], name, launched[1]
    return None

def launch_jackd(name: str, period_frames: int = JACK_PERIOD_FRAMES, log=subprocess.DEVNULL,
                 ready_s: float = 5.0) -> tuple[subprocess.Popen, bool] | None:
    """A JACK server named `name` (dummy driver, realtime when allowed): (process, realtime), or None."""
    jackd = shutil.which("jackd")
    if jackd is None:
        return None
    env = {**os.environ, "JACK_NO_AUDIO_RESERVATION": "1", "JACK_NO_START_SERVER": "1"}
    for realtime in ("-R", "-r"):
        process = subprocess.Popen([jackd, "-n", name, realtime, "-d", "dummy", "-r", str(JACK_RATE), "-p",
                                    str(period_frames)], env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + ready_s
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
            if jack_period_ms(name) is not None:
                return process, realtime == "-R"
        process.kill()
        process.wait()
    return None

def start_private_jack(log=subprocess.DEVNULL, period_frames: int = JACK_PERIOD_FRAMES) -> subprocess.Popen | None:
    started = start_jackd("improv-bench", period_frames, log=log)
    if started is None:
        return None
    process, name, _ = started
    os.environ.update({"JACK_DEFAULT_SERVER": name, "JACK_NO_AUDIO_RESERVATION": "1", "JACK_NO_START_SERVER": "1"})
    return process
