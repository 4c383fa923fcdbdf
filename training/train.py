"""Train the stateful event LSTM: one readable loop, settings from a YAML file.

    python -m training.train --config default [--resume]     # or --config tiny, or --config my.yaml
    python -m training.train --config default --device cuda --amp   # a GPU, mixed precision
    torchrun --nproc_per_node 2 -m training.train --config default   # data-parallel: 2 processes (GPUs)

--device auto (the default) trains on a GPU when torch sees one (CUDA, else Apple's MPS), else on the
CPU. --amp (GPUs only; refused on the CPU) runs the forward pass under autocast in bfloat16 where the GPU
has it, else float16 with a gradient scaler. Weights stay float32 and checkpoints are saved from CPU
copies, so a checkpoint from any device loads on the CPU and exports the same ONNX file.

Under torchrun (RANK, WORLD_SIZE, LOCAL_RANK in the environment; its multi-node flags work too)
each process trains on its own windows (sampler seed + rank), batch_size / WORLD_SIZE a step, and
DistributedDataParallel averages the gradients (backend nccl on CUDA, gloo on the CPU), so the
global batch is the config's. Rank 0 alone validates and writes checkpoints, the log, the progress
bar and TensorBoard; --resume works with any number of processes.

A checkpoint (`last.pt`, and `best.pt` on the best validation loss) is written each epoch and
carries its own settings, so export and resume need nothing else. An "epoch" is `epoch_tokens`
tokens of random augmented windows, since windows are drawn, not enumerated.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from improv.events import Vocabulary
from training.data import EVAL_AUGMENT_SEED, Augment, Dataset, WindowSampler, augmented_tokens
from training.errors import TrainingError, reports_errors
from training.model import EventLSTM, ModelConfig, count_parameters

LN2 = math.log(2)
CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # package data: found wherever training is installed
CONFIG_HELP = ("training settings: a packaged config by name, `default` (the shipped model's settings, up to 110 "
               "minutes) or `tiny` (a 2 x 64 LSTM, 3 short epochs: seconds of training, to check the data and the "
               "whole path before a long run), or a path to a YAML file")


def packaged_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def config_path(name_or_path: str) -> Path:
    """A YAML file that exists, else a packaged config by name ("default", "tiny")."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if name_or_path in packaged_configs():
        return CONFIG_DIR / f"{name_or_path}.yaml"
    raise TrainingError(f"no config {name_or_path!r}: not a YAML file and not a packaged config "
                        f"(packaged: {', '.join(packaged_configs())})")


@dataclass
class TrainConfig:
    data: str = ".cache/data/dataset.npz"
    out_dir: str = "checkpoints/default"
    seed: int = 1234
    model: dict = field(default_factory=dict)  # ModelConfig fields; vocab_size comes from the vocabulary
    batch_size: int = 32
    seq_len: int = 256
    lr: float = 2e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    epoch_tokens: int = 1_000_000
    epochs: int = 10
    max_minutes: float | None = None  # stop (after a checkpoint) once this much time has passed
    class_weights: dict | None = None  # e.g. {NOTE_ON: 2.0}: loss weight per token group; off by default
    augment: dict = field(default_factory=dict)  # Augment fields; `augment: null` turns it off
    threads: int = 2
    validation_pieces: int | None = None  # cap for a quick run
    styles: bool = False  # a STYLE token per style of the data (training.data.style_of), after START in each window
    style_dropout: float = 0.1  # with styles: this share of windows has none, so the model also runs without one
    style_answers: float = 0.3  # with styles: this share of windows is a phrase, a pause, the style again, an answer
    init_from: str | None = None  # warm start: a float .onnx exported by training.export (training/warmstart.py)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        with open(path) as handle:
            try:
                raw = yaml.safe_load(handle) or {}
            except yaml.YAMLError as err:
                raise TrainingError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from err
        if not isinstance(raw, dict):
            raise TrainingError(f"{path}: expected settings (name: value lines), found a {type(raw).__name__}")
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise TrainingError(f"{path}: unknown setting(s) {sorted(unknown)}; allowed: {sorted(cls.__dataclass_fields__)}")
        return cls(**raw)


DEVICES = ("auto", "cpu", "cuda", "mps")
AMP_CHOICES = ("auto", "bf16", "fp16")


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """The device a run trains on: `auto` is a GPU when torch sees one (CUDA, else MPS), else the CPU.

    Under torchrun each process on a machine takes the GPU of its LOCAL_RANK.
    """
    if name not in DEVICES:
        raise TrainingError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise TrainingError(f"--device cuda: torch {torch.__version__} ({build}) sees no CUDA GPU; "
                                "use --device cpu, or install a CUDA build of torch==2.13.0")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name == "mps" and not mps_available():
        raise TrainingError("--device mps: torch sees no Apple GPU (MPS); use --device cpu")
    return torch.device(name)


def amp_dtype(amp: str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for --amp, or None without it. The CPU is refused: mixed precision is for GPUs."""
    if amp is None:
        return None
    if amp not in AMP_CHOICES:
        raise TrainingError(f"unknown --amp {amp!r}; choose one of {', '.join(AMP_CHOICES)}")
    if device.type == "cpu":
        raise TrainingError("--amp is for GPUs (--device cuda or mps) and this run is on the CPU, "
                            "where it would be slower, not faster; leave --amp out")
    if amp == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        amp = "bf16" if bf16 else "fp16"
    return torch.bfloat16 if amp == "bf16" else torch.float16


def needs_grad_scaler(dtype: torch.dtype | None) -> bool:
    """float16 gradients underflow without a scaler; bfloat16 has float32's range and needs none."""
    return dtype == torch.float16


def cpu_state_dict(model: nn.Module) -> dict:
    """The weights as CPU float tensors: a checkpoint from any device loads anywhere."""
    return {name: tensor.detach().to("cpu") for name, tensor in model.state_dict().items()}


def class_weight_vector(vocab: Vocabulary, weights: dict | None) -> torch.Tensor | None:
    if not weights:
        return None
    vector = torch.ones(vocab.size)
    for group, weight in weights.items():
        offset, size = vocab.offset(group), vocab.group_size(group)
        vector[offset : offset + size] = float(weight)
    return vector


@torch.no_grad()
def held_out_bits(model: EventLSTM, pieces: list[np.ndarray], pad: int, chunk: int = 2048,
                  given_from: int | None = None) -> tuple[float, int]:
    """Bits per token over whole pieces, state carried from START to the end as the daemon does (in float32).

    Tokens from `given_from` up (STYLE tokens) are heard but not scored: they are given, never predicted."""
    model.eval()
    device = model.head.weight.device
    total_nats, total_tokens = 0.0, 0
    for tokens in pieces:
        h, c = model.initial_state(1)
        x = torch.from_numpy(tokens).unsqueeze(0).to(device)
        for start in range(0, x.shape[1] - 1, chunk):
            inputs, targets = x[:, start : start + chunk], x[:, start + 1 : start + chunk + 1]
            if given_from is not None:
                targets = targets.masked_fill(targets >= given_from, pad)
            logits, h, c = model(inputs[:, : targets.shape[1]], h, c)
            total_nats += nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                                      ignore_index=pad, reduction="sum").item()
            total_tokens += int((targets != pad).sum())
    model.train()
    return total_nats / max(total_tokens, 1) / LN2, total_tokens


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps))
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * progress))


def run_eta_s(config: TrainConfig, steps_per_epoch: int, step: int, elapsed_s: float, step_s: float) -> float:
    """Seconds until the run ends at the pace so far (step_s per step, validation included).

    The run ends after `epochs`, or with max_minutes after the first epoch that ends past it.
    """
    epoch_s = step_s * steps_per_epoch
    done = step / steps_per_epoch  # epochs, fractional
    end = config.epochs
    if config.max_minutes is not None and epoch_s > 0:
        past_limit = math.floor(done + (config.max_minutes * 60 - elapsed_s) / epoch_s) + 1
        end = min(end, max(past_limit, math.floor(done) + 1))  # the epoch under way always finishes
    return max(0.0, (end - done) * epoch_s)


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def machine_description(device: torch.device | None = None) -> str:
    """Where a run happened, for the model card: OS, CPU model and count, torch and its threads, the GPU."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:  # Linux names the CPU model here; platform does not
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = (f"{platform.system()} {platform.machine()} ({cpu}, {os.cpu_count()} logical CPUs), "
            f"torch {torch.__version__} on {torch.get_num_threads()} threads")
    if device is not None and device.type == "cuda":
        text += f", on {torch.cuda.get_device_name(device)}"
    elif device is not None and device.type == "mps":
        text += ", on the Apple GPU (MPS)"
    return text


def progress_bar(total: int, description: str):
    try:
        from tqdm import tqdm
        return tqdm(total=total, desc=description, unit="step", dynamic_ncols=True, mininterval=5)
    except ImportError:
        return None


def tensorboard_writer(out_dir: Path):
    """A SummaryWriter on OUT_DIR/tensorboard, or None when tensorboard is not installed (logs are optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out_dir / "tensorboard"))


@dataclass(frozen=True)
class Processes:
    """This process's place in a torchrun job (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE), or a lone run."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1

    @classmethod
    def from_env(cls, env=os.environ) -> "Processes":
        if "RANK" not in env or "WORLD_SIZE" not in env:  # not started by torchrun
            return cls()
        try:
            return cls(int(env["RANK"]), int(env.get("LOCAL_RANK", 0)), int(env["WORLD_SIZE"]),
                       int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"])))
        except ValueError as err:
            raise TrainingError(f"torchrun's environment is not numbers: {err}") from err

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Rank 0 alone writes checkpoints, logs, the progress bar and TensorBoard, and validates."""
        return self.rank == 0

    def describe(self) -> str:
        machines = max(1, self.world_size // max(1, self.local_world_size))
        return f"{self.world_size} processes on {machines} machine{'s' * (machines != 1)}"


def check_gpus(processes: Processes, device: torch.device) -> None:
    """One process a GPU: more processes on a machine than its GPUs would share one, which nccl refuses."""
    if device.type == "cuda" and processes.local_world_size > torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise TrainingError(f"{processes.local_world_size} processes on this machine (torchrun --nproc_per_node) "
                            f"but torch sees {count} GPU{'s' * (count != 1)}: give --nproc_per_node {count}, one "
                            "process a GPU, or train on the CPU with --device cpu")


def per_process_batch(batch_size: int, world_size: int) -> int:
    """Each process's windows a step: the config's batch is the global batch, shared out evenly."""
    if batch_size % world_size:
        raise TrainingError(f"batch_size {batch_size} does not divide among {world_size} processes (WORLD_SIZE): "
                            f"each takes batch_size / WORLD_SIZE windows a step, so the global batch stays the "
                            f"config's; choose a batch_size that is a multiple of {world_size}")
    return batch_size // world_size


def train(config: TrainConfig, resume: bool = False, log=print, device: str = "auto", amp: str | None = None) -> Path:
    """Train (or with resume, continue) a run; returns best.pt. `device` and `amp` as --device and --amp.

    Started by torchrun (RANK and WORLD_SIZE set), each process trains on its own windows and
    DistributedDataParallel averages the gradients; the process group ends with the run.
    """
    processes = Processes.from_env()
    batch = per_process_batch(config.batch_size, processes.world_size)  # before anything starts
    run_device = resolve_device(device, processes.local_rank)
    dtype = amp_dtype(amp, run_device)
    check_gpus(processes, run_device)
    if not processes.distributed:
        return _train(config, resume, log, run_device, dtype, processes, batch)
    from torch import distributed

    if run_device.type == "cuda":
        torch.cuda.set_device(run_device)
    # The others wait while rank 0 validates and saves: a long validation must not time them out.
    distributed.init_process_group("nccl" if run_device.type == "cuda" else "gloo",
                                   timeout=datetime.timedelta(hours=2))
    try:
        best = _train(config, resume, log if processes.main else _quiet, run_device, dtype, processes, batch)
        # Every process leaves together: one that tore down its group while another still talked to it
        # aborted in gloo ("terminate called without an active exception").
        distributed.barrier()
        return best
    finally:
        distributed.destroy_process_group()


def _quiet(*_args, **_kwargs) -> None:
    pass


def _broadcast(value, processes: Processes):
    """Rank 0's value on every process (a no-op alone)."""
    if not processes.distributed:
        return value
    from torch import distributed

    box = [value]
    distributed.broadcast_object_list(box, src=0)
    return box[0]


def _all_sum(value: float, processes: Processes, device: torch.device) -> float:
    if not processes.distributed:
        return value
    from torch import distributed

    total = torch.tensor([float(value)], dtype=torch.float64, device=device)
    distributed.all_reduce(total)
    return float(total.item())


def _train(config: TrainConfig, resume: bool, log, run_device: torch.device, dtype: torch.dtype | None,
           processes: Processes, batch_size: int) -> Path:
    # A CPU shared by a machine's processes: its threads are shared out too.
    threads = config.threads if run_device.type != "cpu" else max(1, config.threads // processes.local_world_size)
    torch.set_num_threads(threads)
    torch.manual_seed(config.seed)  # the same initial weights on every process
    out_dir = Path(config.out_dir)
    if processes.main:
        out_dir.mkdir(parents=True, exist_ok=True)
    if not Path(config.data).is_file():
        raise TrainingError(f"no dataset at {config.data} (the config's `data`): make one with "
                            "python -m training.data, or let python -m training.pipeline do all the steps")
    dataset = Dataset.load(Path(config.data))
    vocab = Vocabulary(styles=dataset.style_names()) if config.styles else Vocabulary()
    model_config = ModelConfig(vocab_size=vocab.size, **config.model)
    model = EventLSTM(model_config).to(run_device)
    if config.init_from and not (resume and (out_dir / "last.pt").exists()):
        from training.warmstart import check, load_onnx_into

        model.cpu()
        load_onnx_into(model, config.init_from, seed=config.seed)
        log(f"warm start from {config.init_from}: torch reproduces its logits within "
            f"{check(model, config.init_from):.1e}; vocabulary {vocab.size} tokens, styles {list(vocab.styles)}")
        model.to(run_device)
    if processes.rank:
        torch.manual_seed(config.seed + processes.rank)  # its own dropout masks
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    augment = Augment(**config.augment) if config.augment is not None else None
    # Each process draws its own windows; rank 0 draws exactly what a lone run would.
    sampler = WindowSampler(dataset, "train", vocab, config.seq_len, augment, config.seed + processes.rank,
                            style_dropout=config.style_dropout if vocab.styles else 0.0,
                            answer_share=config.style_answers if vocab.styles else 0.0)
    # Player-like validation (rank 0): the held-out pieces augmented once, identically every epoch and run.
    validation = (augmented_tokens(dataset, "validation", vocab, 1, EVAL_AUGMENT_SEED)[: config.validation_pieces]
                  if processes.main else [])
    if processes.main and not validation:
        log(f"no validation pieces: the data has {len(dataset.piece_ids)} pieces and the split (about 1 piece in 20 "
            "goes to validation) gave none to it; validation loss is not measured and best.pt is the last epoch - "
            "add more files")
    pad = vocab.special("PAD")
    weights = class_weight_vector(vocab, config.class_weights)
    loss_fn = nn.CrossEntropyLoss(weight=None if weights is None else weights.to(run_device), ignore_index=pad)
    scaler = torch.amp.GradScaler(run_device.type) if needs_grad_scaler(dtype) else None
    autocast = ((lambda: torch.autocast(run_device.type, dtype=dtype)) if dtype is not None
                else contextlib.nullcontext)
    steps_per_epoch = max(1, config.epoch_tokens // (config.batch_size * config.seq_len))
    total_steps = steps_per_epoch * config.epochs
    state = {"step": 0, "epoch": 0, "history": [], "best_bits": float("inf"), "elapsed_s": 0.0, "machines": []}

    last = out_dir / "last.pt"
    # Rank 0 reads the checkpoint and hands it to the others: no file system need be shared.
    checkpoint = torch.load(last, weights_only=False, map_location="cpu") if resume and processes.main \
        and last.exists() else None
    checkpoint = _broadcast(checkpoint, processes)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])  # the unwrapped model's weights
        optimizer.load_state_dict(checkpoint["optimizer"])  # its state moves to the parameters' device
        if scaler is not None and checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        state = checkpoint["state"]
        if processes.main:
            sampler.rng.bit_generator.state = checkpoint["sampler_rng"]
            torch.set_rng_state(checkpoint["torch_rng"])
        else:  # the others reseed from where the run stands, the same way on every resume
            sampler.rng = np.random.default_rng([config.seed, processes.rank, state["step"]])
            torch.manual_seed(config.seed + 1000 * processes.rank + state["step"])
        log(f"resumed from {last} at epoch {state['epoch']}, step {state['step']}"
            + (f" on {processes.world_size} processes" if processes.distributed else ""))
    machine = machine_description(run_device)
    if processes.distributed:
        machine += f"; {processes.describe()}"
    if machine not in state.setdefault("machines", []):  # a run resumed elsewhere names both machines
        state["machines"].append(machine)
    net = model
    if processes.distributed:
        from torch.nn.parallel import DistributedDataParallel

        # Gradients are averaged over the processes in backward; every process steps the same weights.
        net = DistributedDataParallel(model, device_ids=[run_device] if run_device.type == "cuda" else None)
    precision = "" if dtype is None else f", mixed precision {'bf16' if dtype == torch.bfloat16 else 'fp16'}"
    spread = (f" ({processes.describe()}, {batch_size} windows each a step)" if processes.distributed else "")
    log(f"model {count_parameters(model):,} parameters on {run_device}{precision}{spread}; {steps_per_epoch} steps "
        f"an epoch, {config.epochs} epochs; data {dataset.summary()}")
    writer = tensorboard_writer(out_dir) if processes.main else None
    if writer is not None:
        log(f"TensorBoard logs in {out_dir / 'tensorboard'} (tensorboard --logdir {out_dir})")
    elif processes.main:
        log("no TensorBoard logs: tensorboard is not installed (pip install tensorboard, or the train extra)")
    started = time.monotonic() - state["elapsed_s"]
    session_started, session_step = time.monotonic(), state["step"]  # the pace for the run's ETA
    net.train()
    while state["epoch"] < config.epochs:
        bar = progress_bar(steps_per_epoch, f"epoch {state['epoch'] + 1}/{config.epochs}") if processes.main else None
        epoch_start, epoch_tokens, running = time.monotonic(), 0, None
        for _ in range(steps_per_epoch):
            batch, first_scored = sampler.batch_scored(batch_size)
            windows = torch.from_numpy(batch).to(run_device)  # (B, T + 1)
            inputs, targets = windows[:, :-1], windows[:, 1:]
            if vocab.styles:  # a style token is given, never predicted: not a target
                targets = targets.masked_fill(targets >= vocab.offset("STYLE"), pad)
            if first_scored.any():  # windows shaped as answers: the phrase before the answer is not scored
                position = torch.arange(1, targets.shape[1] + 1, device=run_device)  # each target's place in its window
                targets = targets.masked_fill(position[None, :] < torch.from_numpy(first_scored).to(run_device)[:, None], pad)
            h0, c0 = model.initial_state(batch_size)
            with autocast():
                logits, _, _ = net(inputs, h0, c0)  # (B, T, V)
                loss = loss_fn(logits.reshape(-1, vocab.size).float(), targets.reshape(-1))
            lr = learning_rate(config, state["step"], total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)  # clip the true gradients
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
            state["step"] += 1
            epoch_tokens += int((targets != pad).sum())
            bits = loss.item() / LN2  # this process's windows (rank 0's in the log)
            running = bits if running is None else 0.98 * running + 0.02 * bits
            if bar is not None:
                tokens_per_s = epoch_tokens * processes.world_size / max(time.monotonic() - epoch_start, 1e-9)
                step_s = (time.monotonic() - session_started) / (state["step"] - session_step)
                eta = run_eta_s(config, steps_per_epoch, state["step"], time.monotonic() - started, step_s)
                bar.set_postfix(bits=f"{running:.3f}", tok_s=f"{tokens_per_s:,.0f}", run_eta=clock(eta), refresh=False)
                bar.update()
            if writer is not None:
                writer.add_scalar("train/bits_per_token", bits, state["step"])
                writer.add_scalar("train/learning_rate", lr, state["step"])
        if bar is not None:
            bar.close()
        # Every process's tokens: the run's throughput.
        tokens_per_s = _all_sum(epoch_tokens, processes, run_device) / max(time.monotonic() - epoch_start, 1e-9)
        state["epoch"] += 1
        stopping = False
        if processes.main:
            val_bits, val_tokens = held_out_bits(
                model, validation, pad, given_from=vocab.offset("STYLE") if vocab.styles else None) if validation else (None, 0)
            net.train()
            stopping = _end_epoch(config, state, model, model_config, optimizer, scaler, sampler, dataset, vocab,
                                  out_dir, writer, log, running, val_bits, val_tokens, tokens_per_s, started,
                                  session_started, session_step, steps_per_epoch, processes)
        if _broadcast(stopping, processes):  # the others wait here while rank 0 validates and saves
            log(f"stopping: max_minutes={config.max_minutes} reached")
            break
    if writer is not None:
        writer.close()
    return out_dir / "best.pt"


def _end_epoch(config, state, model, model_config, optimizer, scaler, sampler, dataset, vocab, out_dir, writer, log,
               running, val_bits, val_tokens, tokens_per_s, started, session_started, session_step, steps_per_epoch,
               processes) -> bool:
    """Rank 0 at an epoch's end: the log line, TensorBoard, last.pt and best.pt. True when the run stops."""
    state["elapsed_s"] = time.monotonic() - started
    record = {"epoch": state["epoch"], "step": state["step"], "train_bits": running,
              "validation_bits": val_bits, "tokens_per_s": tokens_per_s, "elapsed_s": state["elapsed_s"]}
    if processes.distributed:
        record["processes"] = processes.world_size
    state["history"].append(record)
    stopping = config.max_minutes is not None and state["elapsed_s"] > config.max_minutes * 60
    step_s = (time.monotonic() - session_started) / (state["step"] - session_step)
    eta = 0.0 if stopping else run_eta_s(config, steps_per_epoch, state["step"], state["elapsed_s"], step_s)
    validation_text = (f"validation {val_bits:.3f} bits/token over {val_tokens} tokens" if val_bits is not None
                       else "no validation pieces")
    log(f"epoch {state['epoch']}/{config.epochs}: train {running:.3f} bits/token, {validation_text}, "
        f"{tokens_per_s:,.0f} tokens/s, {clock(state['elapsed_s'])} elapsed, run ETA {clock(eta)}")
    if writer is not None:
        if val_bits is not None:
            writer.add_scalar("validation/bits_per_token", val_bits, state["step"])
        writer.add_scalar("train/tokens_per_s", tokens_per_s, state["step"])
        writer.flush()  # readable while the run goes on
    checkpoint = {"model": cpu_state_dict(model), "model_config": model_config.to_dict(),
                  "train_config": asdict(config), "vocab": vocab.to_json(), "optimizer": optimizer.state_dict(),
                  "sampler_rng": sampler.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                  "scaler": scaler.state_dict() if scaler is not None else None,
                  "state": state, "data_summary": dataset.summary()}
    _save(checkpoint, out_dir / "last.pt")
    if val_bits is None or val_bits < state["best_bits"]:  # no validation pieces: the latest is best
        if val_bits is not None:
            state["best_bits"] = val_bits
        _save(checkpoint, out_dir / "best.pt")
    return stopping


def _save(checkpoint: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(checkpoint, tmp)
    tmp.replace(path)


@reports_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the improv event LSTM.")
    parser.add_argument("--config", required=True, help=CONFIG_HELP)
    parser.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last.pt")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="where to train: auto (default) is a GPU when torch sees one (CUDA, else MPS), else the CPU")
    parser.add_argument("--amp", nargs="?", const="auto", choices=AMP_CHOICES, default=None,
                        help="mixed precision on a GPU: bf16, fp16 (with a gradient scaler), or bare --amp for bf16 "
                             "where the GPU has it, else fp16; refused on the CPU")
    args = parser.parse_args(argv)
    path = config_path(args.config)
    say = print if Processes.from_env().main else _quiet  # under torchrun, rank 0 speaks for the run
    say(f"config: {path}")
    best = train(TrainConfig.from_yaml(path), resume=args.resume, device=args.device, amp=args.amp)
    say(f"best checkpoint: {best}")
    return 0


if __name__ == "__main__":
    code = main()
    if Processes.from_env().distributed:
        # The run is done and saved. A gloo worker's own teardown at interpreter exit can abort ("terminate
        # called without an active exception", seen under load on 2 shared cores), which torchrun would
        # report as a failed run: the worker leaves at once instead.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
