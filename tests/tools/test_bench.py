"""improv bench reports what it measured: the JSON shape and sanity, never the timings themselves."""

import json
import subprocess
import sys

import pytest

KEYS = {"step_us", "ort_run_us", "torch_step_us", "sampling_us", "weights_mib", "bandwidth_gbs",
        "step_fraction_of_bandwidth", "reaction_ms", "jack_period_ms", "idle_cpu_percent", "rss_mib",
        "jack_client", "jack_xruns", "cpu_steal_percent", "send_wait_ms", "reaction_periods", "memory_mix_us",
        "memory_learn_us"}


def check_percentiles(figures, keys=("p50", "p99")):
    """Each percentile was measured: a positive duration (a zero or a negative one is a broken timer)."""
    assert all(figures[k] > 0 for k in keys), figures


@pytest.mark.jack
def test_bench_json_reports_every_figure_it_measured(jack):
    result = subprocess.run([sys.executable, "-m", "improv.cli", "bench", "--json", "--seconds", "0.3", "--phrases", "4"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert KEYS <= set(report)
    check_percentiles(report["step_us"], ("p50", "p99", "p999"))
    for key in ("ort_run_us", "cold_step_us", "engine_step_us", "sampling_us", "reaction_compute_us", "memory_mix_us",
                "memory_learn_us", "reaction_ms",
                "answer_after_silence_ms", "echo_ms"):
        assert report[key] is not None, f"{key} was not measured: {result.stderr[-2000:]}"
        check_percentiles(report[key])
    for key in ("reaction_ms", "answer_after_silence_ms", "echo_ms"):  # and over the notes JACK kept time for
        on_time = report[key]["on_time"]
        if on_time is not None:
            check_percentiles(on_time)
            assert 1 <= on_time["n"] <= report[key]["n"]
    assert report["jack_client"] in ("native", "rtmidi")
    if report["torch_step_us"] is not None:
        check_percentiles(report["torch_step_us"])
    assert report["weights_mib"] > 1 and report["bandwidth_gbs"] > 0 and report["step_fraction_of_bandwidth"] > 0
    assert report["jack_period_ms"] == pytest.approx(jack.period_ms, abs=1e-3)  # it measured the server it found
    assert isinstance(report["idle_cpu_percent"], float) and report["rss_mib"] > 10
    assert report["reaction_ms"]["n"] >= 1 and report["answer_after_silence_ms"]["n"] <= 4
    # Counted from the cycle that carried the key: improv's note comes one or more whole periods later.
    assert all(int(periods) >= 1 for periods in report["reaction_periods"])
    waits = report["send_wait_ms"]  # the probe's wait for its next cycle: one for each continuous note
    assert waits["n"] >= report["reaction_ms"]["n"]
    assert report["jack_xruns"] is None  # counted only on a server the bench started itself
    assert report["cpu_steal_percent"] is None or 0 <= report["cpu_steal_percent"] <= 100


@pytest.mark.jack
def test_idle_by_period_reports_each_period_it_was_asked_for(jack):
    result = subprocess.run([sys.executable, "-m", "improv.cli", "bench", "--json", "--idle-periods", "1024"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert list(report) == ["1024"]
    figures = report["1024"]
    assert figures["jack_period_ms"] == pytest.approx(1024 / 48, abs=1e-3)
    assert isinstance(figures["idle_cpu_percent"], float)
    assert isinstance(figures["jack_client_floor_cpu_percent"], float)
