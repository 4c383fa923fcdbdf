"""`improv bench`: how fast improv is, measured side by side in one run, and how close to the machine.

Measures (microseconds unless named): the model step as the live engine does it (IOBinding), a bare
onnxruntime step with plain run(), a torch eager step of the same weights (when torch is installed),
sampling per token, the engine's whole cost per generated token, the machine's memory bandwidth over
a buffer the size of the weights, and, through a JACK server, the reaction time of the real daemon,
its idle CPU and its resident memory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter

import numpy as np

from improv.config import DEFAULT_STYLE_STRENGTH, Config
from improv.engine import Engine
from improv.errors import PortError
from improv.events import Msg
from improv.midi.backend import uses_native_jack, virtual_port_names
from improv.midi.jack import HANDOVER_S, default_jack_server, jack_period_ms
from improv.model import OnnxModel, open_stepped
from improv.offline import VirtualClock, perform, run_until
from improv.sampling import MaskBuilder, sample
from improv.tools import bare_client
from improv.tools.jackd import JACK_PERIOD_FRAMES, JACK_RATE, jack_running, start_jackd, start_private_jack
from improv.tools.probe import ProbeClient, note_ons
from improv.tools.procstat import cpu_ticks, idle_cpu_percent, process_rss_mib, steal_percent

IDLE_SECONDS = 10.0  # CPU time is counted in 10 ms ticks: 10 s resolves 0.1% of a core
CONTINUOUS_PLAY_ON_MS = 400  # continuous mode in the benchmark: improv stops soon, so each note starts from silence


def percentiles_us(samples_ns, keys=(50, 99, 99.9)) -> dict:
    values = np.asarray(samples_ns, dtype=np.float64) / 1000.0
    names = {50: "p50", 99: "p99", 99.9: "p999"}
    return {names[k]: round(float(np.percentile(values, k)), 2) for k in keys}


def reaction_summary_ms(values_ms) -> dict | None:
    """p50 / p99 and the count of reaction times already in ms; None when there are none."""
    if len(values_ms) == 0:
        return None
    return {"p50": round(float(np.percentile(values_ms, 50)), 2), "p99": round(float(np.percentile(values_ms, 99)), 2),
            "n": len(values_ms)}


def timed_through_jack(samples: list[tuple[float, bool]]) -> dict | None:
    """The summary of (ms, on time) samples, with the same over the samples during which every JACK
    cycle came on time as "on_time": what the program did, apart from what the machine did."""
    summary = reaction_summary_ms([ms for ms, _ in samples])
    if summary is not None:
        summary["on_time"] = reaction_summary_ms([ms for ms, on_time in samples if on_time])
    return summary


def reply_sample(client, reference_s: float, reply_s: float, lead_s: float = 0.0) -> tuple[float, bool]:
    """(ms from reference to reply, whether JACK kept time meanwhile: no late cycle in
    (reference - lead_s, reply]). Answers are handed to the client HANDOVER_S before they are due, so
    for them a late cycle from then on counts as well."""
    return (reply_s - reference_s) * 1000, not client.late_between(reference_s - lead_s, reply_s)


def _timed(fn, iterations: int) -> list[int]:
    times = []
    for _ in range(iterations):
        started = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - started)
    return times


def bench_step(model: OnnxModel, iterations: int) -> tuple[dict, dict]:
    """(live IOBinding step, plain session.run step) over the same random tokens, taken in turns so
    that both see the same machine: measured one after the other, drift on a shared VM favours one."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(2, model.vocab.size, iterations)
    model.reset()
    shape = (model.layers, 1, model.hidden)
    h, c = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    step_ns, run_ns = [], []
    for token in tokens:
        started = time.perf_counter_ns()
        model.step(int(token))
        step_ns.append(time.perf_counter_ns() - started)
        started = time.perf_counter_ns()
        _, h, c = model.session.run(None, {"tokens": np.array([[token]], np.int64), "h0": h, "c0": c})
        run_ns.append(time.perf_counter_ns() - started)
    return percentiles_us(step_ns), percentiles_us(run_ns, (50, 99))


def bench_cold_step(model: OnnxModel, samples: int = 30, idle_s: float = 0.1) -> dict:
    """A step after the engine thread has slept `idle_s`, as the first step of a reaction is: on a
    shared VM the caches do not keep the weights through even a few milliseconds of idling."""
    cold_ns = []
    for i in range(samples):
        time.sleep(idle_s)
        started = time.perf_counter_ns()
        model.step(2 + i)
        cold_ns.append(time.perf_counter_ns() - started)
    return percentiles_us(cold_ns, (50, 99))


def bench_torch_step(model: OnnxModel, iterations: int) -> dict | None:
    """A torch eager step of the same weights, when torch (and onnx, to read them) are installed."""
    try:
        import onnx
        import torch
        from onnx import numpy_helper
    except ImportError:
        return None
    graph = onnx.load(str(model.path)).graph
    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    lstm_nodes = [n for n in graph.node if n.op_type == "LSTM"]
    if not lstm_nodes or any(w.dtype != np.float32 for w in weights.values() if w.ndim >= 2 and w.size > 1000):
        return None  # a quantized model has no float weights to give torch
    torch.set_num_threads(1)
    hidden, layers = model.hidden, model.layers
    embedding = next(w for w in weights.values() if w.ndim == 2 and w.shape[0] == model.vocab_size and w.shape[1] != hidden)
    head_w = next(w for w in weights.values() if w.ndim == 2 and hidden in w.shape and model.vocab_size in w.shape
                  and w is not embedding)
    lstm = torch.nn.LSTM(embedding.shape[1], hidden, layers)
    onnx_to_torch_gates = [0, 2, 3, 1]  # ONNX orders gates i, o, f, c; torch i, f, g, o
    with torch.no_grad():
        for layer, node in enumerate(lstm_nodes[:layers]):
            w, r, b = (weights[name] for name in node.input[1:4])
            reorder = lambda m: np.concatenate([np.split(m, 4)[g] for g in onnx_to_torch_gates])  # noqa: E731
            getattr(lstm, f"weight_ih_l{layer}").copy_(torch.from_numpy(reorder(w[0])))
            getattr(lstm, f"weight_hh_l{layer}").copy_(torch.from_numpy(reorder(r[0])))
            bias_w, bias_r = np.split(b[0], 2)
            getattr(lstm, f"bias_ih_l{layer}").copy_(torch.from_numpy(reorder(bias_w)))
            getattr(lstm, f"bias_hh_l{layer}").copy_(torch.from_numpy(reorder(bias_r)))
    embed = torch.from_numpy(embedding.copy())
    head = torch.from_numpy((head_w if head_w.shape[0] == hidden else head_w.T).copy())
    state = (torch.zeros(layers, 1, hidden), torch.zeros(layers, 1, hidden))
    tokens = np.random.default_rng(0).integers(2, model.vocab.size, iterations)
    times = []
    with torch.inference_mode():
        for token in tokens:
            started = time.perf_counter_ns()
            y, state = lstm(embed[int(token)].view(1, 1, -1), state)
            y @ head
            times.append(time.perf_counter_ns() - started)
    return percentiles_us(times, (50, 99))


def bench_sampling(vocab, iterations: int) -> tuple[dict, dict]:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=vocab.size).astype(np.float32)
    plain = _timed(lambda: sample(logits, 0.9, 0.95, rng), iterations)
    masks = MaskBuilder(vocab)
    masks.set_range(21, 108)
    sounding = {60: 0.0, 64: 0.0, 67: 0.0}
    masked = _timed(lambda: sample(logits, 0.9, 0.95, rng, masks.build(sounding, 8, False, list(sounding))), iterations)
    return percentiles_us(plain, (50, 99)), percentiles_us(masked, (50, 99))


def bench_engine_token(model, seconds: float, style: str | None = None) -> tuple[dict, dict]:
    """The engine's whole cost per generated token (mask, sample, step, decode, checkpoint), as the
    engine times each generation call (`token_ns`) while it answers a phrase on the virtual clock; and
    the model steps inside it as the engine timed them (between steps the engine's own work cools the
    caches a little). The engine keeps the last TIMES_KEPT of each. With `style`, the model is the
    guided one the daemon runs (improv.guidance: two rows a step, and the mix)."""
    config = Config()
    config.model.style = style
    config.engine.response_ms = round(seconds * 1000)
    engine = Engine(model, config, 0.0, np.random.default_rng(2))
    clock = VirtualClock()
    phrase = []
    for i, pitch in enumerate((60, 64, 67, 72, 67, 64)):
        phrase += [(i * 0.2, Msg("note_on", pitch, 80)), (i * 0.2 + 0.15, Msg("note_off", pitch, 0))]
    perform(engine, clock, phrase)
    engine.token_ns.clear()
    engine.step_ns.clear()
    run_until(engine, clock, clock.now() + seconds + 1.0)
    return ({**percentiles_us(engine.token_ns), "tokens": len(engine.token_ns)},
            percentiles_us(engine.step_ns, (50, 99)))


def bench_memory(model: OnnxModel, tokens: int = 20_000) -> tuple[dict, dict]:
    """The session memory's cost per token as the engine pays it: (its prediction mixed into the
    logits with a mask, before each generated token; learning a heard token, with the weight step
    the first token of each heard event takes), over a stream of the engine's own answer to a
    phrase, repeated so contexts come round as a player's do. The memory grows as the stream goes:
    the last tokens meet the largest tables."""
    from improv.memory import ContextClasses, SessionMemory

    config = Config()
    config.engine.response_ms = 20_000
    engine = Engine(model, config, 0.0, np.random.default_rng(4), record_history=True)
    clock = VirtualClock()
    phrase = []
    for i, pitch in enumerate((60, 64, 67, 72, 67, 64)):
        phrase += [(i * 0.2, Msg("note_on", pitch, 80)), (i * 0.2 + 0.15, Msg("note_off", pitch, 0))]
    perform(engine, clock, phrase)
    run_until(engine, clock, clock.now() + 21.0)
    stream = engine.history[1:] * max(1, tokens // max(1, len(engine.history)))
    memory = SessionMemory(model.vocab.size, classes=ContextClasses.for_vocab(model.vocab))
    rng = np.random.default_rng(5)
    logits = rng.normal(size=model.vocab.size).astype(np.float32)
    allowed = np.ones(model.vocab.size, dtype=bool)
    allowed[:2] = False  # PAD and START, as the engine's masks always leave out
    mix_ns, learn_ns = [], []
    for index, token in enumerate(stream[:tokens]):
        started = time.perf_counter_ns()
        memory.mix(logits, memory.recent, 0.8, allowed)
        mixed = time.perf_counter_ns()
        memory.learn(token, 0.1 if index % 3 == 0 else None)  # a heard event is about three tokens
        learn_ns.append(time.perf_counter_ns() - mixed)
        mix_ns.append(mixed - started)
    return ({**percentiles_us(mix_ns), "tokens": len(mix_ns), "contexts": len(memory)},
            percentiles_us(learn_ns))


def bench_reaction_compute(model: OnnxModel, notes: int = 200) -> dict:
    """improv's own share of the continuous-mode reaction, without the transport: from a player's
    note reaching the engine to improv's first note leaving it (through `emit`, as in the daemon),
    on the virtual clock. The heard tokens, the sampled ones and their steps are all on this path."""
    config = Config()
    config.engine.mode, config.engine.response_ms = "continuous", CONTINUOUS_PLAY_ON_MS
    first_out: list[int] = []
    engine = Engine(model, config, 0.0, np.random.default_rng(3),
                    emit=lambda event: first_out.append(time.perf_counter_ns()) if event.is_on and not first_out else None)
    clock, reactions = VirtualClock(), []
    for i in range(notes):
        at_s, pitch = 1.0 + 1.5 * i, 60 + (i * 5) % 12
        run_until(engine, clock, at_s)  # improv has finished answering the note before
        first_out.clear()
        started = time.perf_counter_ns()
        returned = engine.on_player(at_s, Msg("note_on", pitch, 80)) + engine.poll(at_s)
        ended = time.perf_counter_ns()
        if first_out or any(event.is_on for event in returned):
            reactions.append((first_out[0] if first_out else ended) - started)
        perform(engine, clock, [(at_s + 0.1, Msg("note_off", pitch, 0))])
    return {**percentiles_us(reactions, (50, 99)), "n": len(reactions)}


def memory_bandwidth_gbs(size_bytes: int, repeats: int = 30) -> float:
    """Best streaming read rate over a buffer the size of the weights, one core. An integer max is a
    SIMD pass that does nothing but read (a float sum is bound by its additions, not by memory)."""
    buffer = np.ones(max(size_bytes // 4, 1024), dtype=np.int32)
    buffer.max()
    best = min(_timed(buffer.max, repeats))
    return buffer.nbytes / best  # bytes per ns == GB/s


def weight_bytes(model: OnnxModel) -> int:
    try:
        import onnx
        from onnx import numpy_helper

        return int(sum(numpy_helper.to_array(i).nbytes for i in onnx.load(str(model.path)).graph.initializer))
    except ImportError:
        return model.path.stat().st_size  # the file is almost all weights


def _bare_client(name: str, backend: str, echo: bool = False) -> tuple[subprocess.Popen, tuple[str, str]]:
    process = subprocess.Popen([sys.executable, "-m", "improv.tools.bare_client", "--name", name, "--backend", backend]
                               + (["--echo"] if echo else []), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, bare_client.port_names(name, backend)


def jack_client_floor_cpu(backend: str = "jack") -> float:
    """Idle CPU of a process that only holds a MIDI input and output open under JACK through the
    same kind of client as improv's, connected to a client as improv's are in the benchmark: JACK
    wakes each client every period, so this is the floor under any JACK MIDI program's idle CPU."""
    client = ProbeClient("bench-floor")  # first: should it fail, no process is left behind
    process, (floor_in, floor_out) = _bare_client("floor", backend)
    try:
        client.connect(to_port=floor_in, from_port=floor_out)
        time.sleep(1.0)
        return idle_cpu_percent(process.pid, IDLE_SECONDS)
    finally:
        client.close()
        process.kill()
        process.wait()


def bench_transport_floor(notes: int, backend: str = "jack") -> dict | None:
    """The reaction of a program that does nothing but echo each note at once, through the same JACK
    server and the same kind of client as improv's (`backend`): the transport's share of any reaction."""
    client = ProbeClient("bench-echo")
    echo, (echo_in, echo_out) = _bare_client("echo", backend, echo=True)
    try:
        client.connect(to_port=echo_in, from_port=echo_out)
        reactions = []
        for i in range(notes):
            client.drain()
            client.send(0x90, 60 + i % 12, 80)
            time.sleep(0.05)
            echoed, entered = note_ons(client.drain()), client.last_sent_s()
            if echoed and entered is not None:
                reactions.append(reply_sample(client, entered, echoed[0][0]))
            client.send(0x80, 60 + i % 12, 0)
            time.sleep(0.05)
    finally:
        client.close()
        echo.kill()
        echo.wait()
    return timed_through_jack(reactions)


def bench_daemon(model_path: str, phrases: int, backend: str = "jack", silence_ms: int = 300) -> dict:
    """Reaction of `improv run` as a client sees it, in both modes; idle CPU and RSS of the daemon."""
    native = uses_native_jack(backend)
    results: dict = {"jack_client": "native" if native else "rtmidi"}
    continuous: list[float] = []
    send_waits: list[float] = []  # the probe's own wait for its next cycle, which figures from the send call include
    for mode in ("call-response", "continuous"):
        log = tempfile.TemporaryFile("w+")  # read only when something went wrong; a pipe could fill and block it
        client = ProbeClient(f"bench-{mode}")
        daemon = subprocess.Popen([sys.executable, "-m", "improv.cli", "run", "--backend", backend, "--no-record",
                                   "--model", str(model_path), "--mode", mode, "--silence-ms", str(silence_ms),
                                   "--response-ms", str(CONTINUOUS_PLAY_ON_MS)],
                                  stdout=subprocess.DEVNULL, stderr=log, text=True)
        try:
            client.connect(*virtual_port_names(backend))
            if mode == "call-response":
                time.sleep(1.0)
                results["idle_cpu_percent"] = idle_cpu_percent(daemon.pid, IDLE_SECONDS)
            reactions = []
            lead_s = HANDOVER_S if mode == "call-response" else 0.0  # answers reach the client before they are due
            for i in range(phrases):
                # Times run from the cycle that carried the key into JACK (as arrivals are stamped:
                # when a synth in the graph plays it), not from the send call a period or less before.
                if mode == "call-response":
                    client.play([60 + i % 5, 64, 67], note_s=0.08, gap_s=0.02)
                    last_up = client.last_sent_s()
                    reference = None if last_up is None else last_up + silence_ms / 1000
                    time.sleep(silence_ms / 1000 + 0.15)
                    client.send(0xB0, 123, 0)  # all notes off: the answer stops, nothing new is heard
                else:
                    time.sleep(CONTINUOUS_PLAY_ON_MS / 1000 + 0.3)  # improv has stopped: measure from silence
                    client.drain()
                    called = client.send(0x90, 60 + i % 12, 80)
                    time.sleep(0.1)
                    reference = client.last_sent_s()
                    if reference is not None:
                        send_waits.append((reference - called) * 1000)
                    client.send(0x80, 60 + i % 12, 0)
                if reference is None:  # the key never left: JACK has stopped (reported as a missing phrase)
                    continue
                ons = [t for t, _ in note_ons(client.drain()) if t > reference - lead_s]
                if ons:
                    reactions.append(reply_sample(client, reference, ons[0], lead_s))
                time.sleep(0.1)
            key = "reaction_ms" if mode == "continuous" else "answer_after_silence_ms"
            results[key] = timed_through_jack(reactions)
            if mode == "continuous":
                continuous = [ms for ms, _ in reactions]
            if len(reactions) < phrases:
                log.seek(0)
                print(f"improv bench: {phrases - len(reactions)} of {phrases} {mode} phrases had no note from improv "
                      f"(a message lost by JACK, a key that never left, or improv stuck); its log ends:\n{log.read()[-1500:]}", file=sys.stderr)
            if mode == "call-response":
                results["rss_mib"] = round(process_rss_mib(daemon.pid), 1)
        finally:
            client.close()
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=10)
            except subprocess.TimeoutExpired:
                daemon.kill()
            log.close()
    period_ms = jack_period_ms()
    results["jack_period_ms"] = round(period_ms, 3) if period_ms is not None else None
    results["send_wait_ms"] = reaction_summary_ms(send_waits)
    if period_ms is not None:  # how many periods after the key improv's note came: whole ones, give or take microseconds
        periods = Counter(str(round(r / period_ms)) for r in continuous)
        results["reaction_periods"] = dict(sorted(periods.items(), key=lambda item: int(item[0])))
    kind = "jack" if native else "jack-rtmidi"  # the bare floor and echo use the same kind of client
    results["jack_client_floor_cpu_percent"] = jack_client_floor_cpu(kind)
    results["echo_ms"] = bench_transport_floor(max(phrases, 20), kind)
    return results


def run_bench(model_path: str | None, seconds: float, start_jack: bool, phrases: int, backend: str = "jack",
              period_frames: int = JACK_PERIOD_FRAMES) -> dict:
    model = OnnxModel(model_path)
    iterations = max(1000, int(seconds * 2000))
    step, ort_run = bench_step(model, iterations)
    sampling, sampling_masked = bench_sampling(model.vocab, iterations)
    weights = weight_bytes(model)
    bandwidth = memory_bandwidth_gbs(weights)
    step_rate = weights / (step["p50"] * 1000)  # bytes per ns
    engine_token, engine_step = bench_engine_token(model, seconds)
    styled_token, styled_step = (bench_engine_token(open_stepped(model.path, lambda: DEFAULT_STYLE_STRENGTH), seconds,
                                                    model.vocab.styles[0]) if model.vocab.styles else (None, None))
    memory_mix, memory_learn = bench_memory(model)
    result = {
        "model": str(model.path), "layers": model.layers, "hidden": model.hidden,
        "step_us": step, "ort_run_us": ort_run, "cold_step_us": bench_cold_step(model),
        "torch_step_us": bench_torch_step(model, iterations // 2),
        "sampling_us": sampling, "sampling_masked_us": sampling_masked,
        "engine_token_us": engine_token, "engine_step_us": engine_step,
        "styled_engine_token_us": styled_token, "styled_engine_step_us": styled_step,
        "memory_mix_us": memory_mix, "memory_learn_us": memory_learn,
        "reaction_compute_us": bench_reaction_compute(model),
        "weights_mib": round(weights / 2**20, 2), "bandwidth_gbs": round(bandwidth, 1),
        "step_fraction_of_bandwidth": round(step_rate / bandwidth, 3),
        "reaction_ms": None, "answer_after_silence_ms": None, "echo_ms": None, "jack_period_ms": None,
        "idle_cpu_percent": None, "jack_client_floor_cpu_percent": None, "rss_mib": None, "cpus": os.cpu_count(),
        "jack_client": None, "jack_xruns": None, "cpu_steal_percent": None, "send_wait_ms": None,
        "reaction_periods": None,
    }
    jack, jack_log = None, tempfile.TemporaryFile("w+", errors="replace")
    if not jack_running() and start_jack:
        jack = start_private_jack(jack_log, period_frames)
    try:
        if jack_running():
            ticks = cpu_ticks()
            try:
                result.update(bench_daemon(str(model.path), phrases, backend))
            except PortError as err:  # e.g. no native client to play and listen with: keep the model figures
                print(f"improv bench: the figures through ports are null: {err}", file=sys.stderr)
            result["cpu_steal_percent"] = steal_percent(ticks, cpu_ticks())
            if jack is not None:  # a server of our own: its log says how often the machine made it miss a cycle
                jack_log.seek(0)
                result["jack_xruns"] = jack_log.read().count("XRun")
        else:
            print("improv bench: no JACK server " + ("could be started (is jackd installed?)" if start_jack else
                  "runs (start one, or pass --start-jack)") + "; the figures through ports are null", file=sys.stderr)
    finally:
        if jack is not None:
            jack.terminate()
            jack.wait()
        jack_log.close()
    return result


def render(result: dict) -> str:
    def p(d, unit="us"):
        return "n/a" if d is None else " / ".join(f"{v}" for k, v in d.items() if k.startswith("p")) + f" {unit}"

    def jack_p(d):  # through JACK: all samples, then those during which JACK kept time
        if d is None or d.get("on_time") is None:
            return p(d, "ms")
        return f"{p(d, 'ms')}; JACK on time: {p(d['on_time'], 'ms')} ({d['on_time']['n']} of {d['n']})"

    lines = [
        f"model {result['model']} ({result['layers']} x {result['hidden']}, {result['weights_mib']} MiB of weights)",
        f"live step (IOBinding)   p50/p99/p99.9  {p(result['step_us'])}",
        f"plain run() step        p50/p99        {p(result['ort_run_us'])} (taken in turns with the live step)",
        f"step after 100 ms idle  p50/p99        {p(result['cold_step_us'])}",
        f"torch eager step        p50/p99        {p(result['torch_step_us'])}",
        f"engine, whole token     p50/p99/p99.9  {p(result['engine_token_us'])}",
        f"  with a style, guided  p50/p99/p99.9  {p(result['styled_engine_token_us'])} (two rows a step; "
        f"its steps {p(result['styled_engine_step_us'])})",
        f"session memory, mix     p50/p99/p99.9  {p(result['memory_mix_us'])} (each generated token)",
        f"session memory, learn   p50/p99/p99.9  {p(result['memory_learn_us'])} (each heard token)",
        f"engine, its model steps p50/p99        {p(result['engine_step_us'])}",
        f"sampling                p50/p99        {p(result['sampling_us'])} (with masks {p(result['sampling_masked_us'])})",
        f"memory bandwidth        {result['bandwidth_gbs']} GB/s; step at {result['step_fraction_of_bandwidth']:.0%} of it",
        f"reaction, engine only   p50/p99        {p(result['reaction_compute_us'])} (player note in -> first note out)",
        f"JACK period             {result['jack_period_ms']} ms; improv's JACK client: {result['jack_client']}; "
        f"xruns reported by a server the bench started: {result['jack_xruns']}; CPU time stolen by the "
        f"hypervisor meanwhile: {result['cpu_steal_percent']} %",
        f"reaction (continuous)   p50/p99        {jack_p(result['reaction_ms'])} (from the cycle that carried the key; "
        f"by periods: {result['reaction_periods']})",
        f"bare echo, same JACK    p50/p99        {jack_p(result['echo_ms'])} (the transport's share of a reaction)",
        f"probe's wait to send    p50/p99        {p(result['send_wait_ms'], 'ms')} (send call to the cycle that "
        "carried the key: in none of the figures through JACK)",
        f"answer after silence    p50/p99        {jack_p(result['answer_after_silence_ms'])} (0 = exactly silence_ms)",
        f"idle daemon             {result['idle_cpu_percent']} % of a core, {result['rss_mib']} MiB resident "
        f"(a bare JACK client of the same kind idles at {result['jack_client_floor_cpu_percent']} %)",
    ]
    return "\n".join(lines)


def idle_by_period(periods: list[int], backend: str = "jack") -> dict:
    """Idle CPU of `improv run` (a client connected to its ports) and of a bare client of the same
    kind, each on a private JACK server at each period in frames: JACK wakes every client once a
    period, so this is how the idle cost follows the period the user chose."""
    kind = "jack" if uses_native_jack(backend) else "jack-rtmidi"
    results = {}
    for frames in periods:
        started = start_jackd("improv-idle", frames)
        if started is None:
            raise PortError(f"jackd did not start at {frames} frames a period: is jackd2 installed?")
        server, name, _ = started
        try:
            with default_jack_server(name):
                client = ProbeClient("bench-idle")
                daemon = subprocess.Popen([sys.executable, "-m", "improv.cli", "run", "--backend", backend,
                                           "--no-record"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    client.connect(*virtual_port_names(backend))
                    time.sleep(1.0)
                    idle = idle_cpu_percent(daemon.pid, IDLE_SECONDS)
                finally:
                    client.close()
                    daemon.terminate()
                    daemon.wait()
                results[str(frames)] = {"jack_period_ms": round(1000 * frames / JACK_RATE, 3), "idle_cpu_percent": idle,
                                        "jack_client_floor_cpu_percent": jack_client_floor_cpu(kind)}
        finally:
            server.terminate()
            server.wait()
    return results


def main(args) -> int:
    if args.idle_periods:
        result = idle_by_period(args.idle_periods, args.backend)
        print(json.dumps(result) if args.json else "\n".join(
            f"{frames:>5} frames ({r['jack_period_ms']} ms): idle improv {r['idle_cpu_percent']} % of a core, "
            f"a bare client {r['jack_client_floor_cpu_percent']} %" for frames, r in result.items()))
        return 0
    result = run_bench(args.model, args.seconds, args.start_jack, args.phrases, args.backend, args.jack_period)
    print(json.dumps(result) if args.json else render(result))
    return 0
