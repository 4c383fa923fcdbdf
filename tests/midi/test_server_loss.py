"""The JACK server stops under a running improv and comes back, as when a user restarts JACK:
improv keeps running, says so, and opens its ports again on the new server."""

import time

import pytest

from improv.midi import jack as jackmidi
from improv.tools.probe import ProbeClient
from jackserver import answers, launch_improv, stop_improv

pytestmark = [pytest.mark.jack,
              pytest.mark.skipif(not jackmidi.available(), reason="the native JACK client was not built")]
SILENCE_MS = 250


def test_improv_outlives_its_jack_server_and_plays_again_on_the_next(jack):
    if jack.process.poll() is not None:
        jack.restart()  # a rerun (after xruns) of a run that had stopped the server
    client = ProbeClient("tester")
    process = launch_improv(client, "--no-record", "--silence-ms", str(SILENCE_MS))
    try:
        assert answers(client, SILENCE_MS)
        client.close()
        jack.stop()
        time.sleep(2.5)  # improv checks its ports once a second, and retries opening them as often
        assert process.poll() is None, "improv died with its JACK server"
        jack.restart()
        client = ProbeClient("tester")
        client.connect()  # waits for improv's ports on the new server
        assert answers(client, SILENCE_MS), "no answer on the new server"
    finally:
        code, stderr = stop_improv(process)
        client.close()
    assert "JACK closed client 'improv'" in stderr and "is back" in stderr, stderr[-2000:]
    assert code == 0 and "Traceback" not in stderr, stderr[-2000:]
