"""Train the stateful event LSTM: one readable loop, settings from a YAML file.

    python -m training.train --config training/configs/default.yaml [--resume]

A checkpoint (`last.pt`, and `best.pt` on the best validation loss) is written each epoch and
carries its own settings, so export and resume need nothing else. An "epoch" is `epoch_tokens`
tokens of random augmented windows, since windows are drawn, not enumerated.
"""

from __future__ import annotations

import argparse
import math
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
from training.model import EventLSTM, ModelConfig, count_parameters

LN2 = math.log(2)


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

    @classmethod
    def from_yaml(cls, path: str) -> "TrainConfig":
        with open(path) as handle:
            raw = yaml.safe_load(handle) or {}
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise SystemExit(f"{path}: unknown setting(s) {sorted(unknown)}; allowed: {sorted(cls.__dataclass_fields__)}")
        return cls(**raw)


def class_weight_vector(vocab: Vocabulary, weights: dict | None) -> torch.Tensor | None:
    if not weights:
        return None
    vector = torch.ones(vocab.size)
    for group, weight in weights.items():
        offset, size = vocab.offset(group), vocab.group_size(group)
        vector[offset : offset + size] = float(weight)
    return vector


@torch.no_grad()
def held_out_bits(model: EventLSTM, pieces: list[np.ndarray], pad: int, chunk: int = 2048) -> tuple[float, int]:
    """Bits per token over whole pieces, state carried from START to the end as the daemon does."""
    model.eval()
    total_nats, total_tokens = 0.0, 0
    for tokens in pieces:
        h, c = model.initial_state(1)
        x = torch.from_numpy(tokens).unsqueeze(0)
        for start in range(0, x.shape[1] - 1, chunk):
            inputs, targets = x[:, start : start + chunk], x[:, start + 1 : start + chunk + 1]
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


def progress_bar(total: int, description: str):
    try:
        from tqdm import tqdm
        return tqdm(total=total, desc=description, unit="step", dynamic_ncols=True, mininterval=5)
    except ImportError:
        return None


def tensorboard_writer(out_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
        return SummaryWriter(str(out_dir / "tensorboard"))
    except Exception:  # tensorboard not installed: logs are optional
        return None


def train(config: TrainConfig, resume: bool = False, log=print) -> Path:
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = Vocabulary()
    dataset = Dataset.load(Path(config.data))
    model_config = ModelConfig(vocab_size=vocab.size, **config.model)
    model = EventLSTM(model_config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    augment = Augment(**config.augment) if config.augment is not None else None
    sampler = WindowSampler(dataset, "train", vocab, config.seq_len, augment, config.seed)
    # Player-like validation: the held-out pieces augmented once, identically every epoch and run.
    validation = augmented_tokens(dataset, "validation", vocab, 1, EVAL_AUGMENT_SEED)[: config.validation_pieces]
    pad = vocab.special("PAD")
    loss_fn = nn.CrossEntropyLoss(weight=class_weight_vector(vocab, config.class_weights), ignore_index=pad)
    steps_per_epoch = max(1, config.epoch_tokens // (config.batch_size * config.seq_len))
    total_steps = steps_per_epoch * config.epochs
    state = {"step": 0, "epoch": 0, "history": [], "best_bits": float("inf"), "elapsed_s": 0.0}

    last = out_dir / "last.pt"
    if resume and last.exists():
        checkpoint = torch.load(last, weights_only=False)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        sampler.rng.bit_generator.state = checkpoint["sampler_rng"]
        torch.set_rng_state(checkpoint["torch_rng"])
        state = checkpoint["state"]
        log(f"resumed from {last} at epoch {state['epoch']}, step {state['step']}")
    log(f"model {count_parameters(model):,} parameters; {steps_per_epoch} steps an epoch, {config.epochs} epochs; "
        f"data {dataset.summary()}")
    writer = tensorboard_writer(out_dir)
    started = time.monotonic() - state["elapsed_s"]
    model.train()
    while state["epoch"] < config.epochs:
        bar = progress_bar(steps_per_epoch, f"epoch {state['epoch'] + 1}/{config.epochs}")
        epoch_start, epoch_tokens, running = time.monotonic(), 0, None
        for _ in range(steps_per_epoch):
            batch = torch.from_numpy(sampler.batch(config.batch_size))  # (B, T + 1)
            inputs, targets = batch[:, :-1], batch[:, 1:]
            h0, c0 = model.initial_state(config.batch_size)
            logits, _, _ = model(inputs, h0, c0)  # (B, T, V)
            loss = loss_fn(logits.reshape(-1, vocab.size), targets.reshape(-1))
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, state["step"], total_steps)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            state["step"] += 1
            epoch_tokens += int((targets != pad).sum())
            bits = loss.item() / LN2
            running = bits if running is None else 0.98 * running + 0.02 * bits
            tokens_per_s = epoch_tokens / max(time.monotonic() - epoch_start, 1e-9)
            if bar is not None:
                bar.set_postfix(bits=f"{running:.3f}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
                bar.update()
            if writer is not None:
                writer.add_scalar("train/bits_per_token", bits, state["step"])
        if bar is not None:
            bar.close()
        state["epoch"] += 1
        val_bits, val_tokens = held_out_bits(model, validation, pad)
        state["elapsed_s"] = time.monotonic() - started
        record = {"epoch": state["epoch"], "step": state["step"], "train_bits": running,
                  "validation_bits": val_bits, "tokens_per_s": tokens_per_s, "elapsed_s": state["elapsed_s"]}
        state["history"].append(record)
        log(f"epoch {state['epoch']}: train {running:.3f} bits/token, validation {val_bits:.3f} bits/token "
            f"over {val_tokens} tokens, {tokens_per_s:,.0f} tokens/s, {state['elapsed_s'] / 60:.1f} min")
        if writer is not None:
            writer.add_scalar("validation/bits_per_token", val_bits, state["step"])
        checkpoint = {"model": model.state_dict(), "model_config": model_config.to_dict(),
                      "train_config": asdict(config), "vocab": vocab.to_json(), "optimizer": optimizer.state_dict(),
                      "sampler_rng": sampler.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                      "state": state, "data_summary": dataset.summary()}
        _save(checkpoint, last)
        if val_bits < state["best_bits"]:
            state["best_bits"] = val_bits
            _save(checkpoint, out_dir / "best.pt")
        if config.max_minutes is not None and state["elapsed_s"] > config.max_minutes * 60:
            log(f"stopping: max_minutes={config.max_minutes} reached")
            break
    if writer is not None:
        writer.close()
    return out_dir / "best.pt"


def _save(checkpoint: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(checkpoint, tmp)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the improv event LSTM.")
    parser.add_argument("--config", required=True, help="YAML settings (see training/configs/)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last.pt")
    args = parser.parse_args(argv)
    best = train(TrainConfig.from_yaml(args.config), resume=args.resume)
    print(f"best checkpoint: {best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
