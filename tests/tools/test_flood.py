"""The flood tool (`python -m improv.tools.flood`) on a short run through JACK: improv run outlives a flood
of note messages, records what it handled, and its memory grows with the recording, not with the flood.
The exact bound on the recorder's memory is tests/test_recording.py's; this one is generous."""

import mido
import pytest

from improv.midi import jack as jackmidi
from improv.tools.flood import flood

pytestmark = [pytest.mark.jack,
              pytest.mark.skipif(not jackmidi.available(), reason="the native JACK client was not built")]


def test_improv_run_outlives_a_flood_and_its_memory_grows_with_the_recording_only(jack, tmp_path):
    # The session memory grows with what it hears up to memory.max_contexts (some 9 MB at the default
    # 20,000): a small cap takes it out of this measure. One second of warm-up takes the one-time costs.
    report = flood(seconds=8, rate=9000, record=True, warmup_s=1.0, settle_s=3.0, memory_contexts=1000,
                   folder=tmp_path)
    assert report["alive_after_flood"] and report["exit_code"] == 0, report
    assert report["messages_sent"] >= 8 * 9000 * 0.25, report  # the probe kept pouring
    take = mido.MidiFile(report["session_file"])
    player = [m for m in take.tracks[0] if m.type in ("note_on", "note_off")]
    assert len(player) == report["session_player_messages"] >= 1000, report
    file_mib = report["session_file_bytes"] / 2**20
    # Held as Python objects, the take took some 25 times its file: 3.9 MiB in such a run (0.6 to 0.8 now).
    assert report["rss_anon_growth_mib"] <= 1.5 + 4 * file_mib, report
