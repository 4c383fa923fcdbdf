"""The soak tool (`python -m improv.tools.soak`) on a short run: the figures it reports are measured."""

import json
import subprocess
import sys

import pytest

from improv.midi import jack as jackmidi

pytestmark = [pytest.mark.jack,
              pytest.mark.skipif(not jackmidi.available(), reason="the native JACK client was not built")]


def test_a_short_soak_reports_no_stuck_note_and_reactions_a_period_or_more_after_the_key(jack):
    result = subprocess.run([sys.executable, "-m", "improv.tools.soak", "--minutes", "0.25", "--json"],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["stuck_notes"] == 0 and report["exit_code"] == 0
    assert report["phrases"] >= 2 and report["rss_first_mib"] > 10
    reaction = report["reaction_ms"]
    assert reaction is not None and reaction["n"] >= 1, report
    # Timed from the cycle that carried the key: improv's note can come no sooner than the next cycle.
    assert reaction["p50"] >= jack.period_ms * 0.9, reaction
