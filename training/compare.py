"""The windowed BiLSTM of an original project, trained on the same windows, scored on the same tokens.

    python -m training.compare --config default [--minutes 6] [--window 32]

It reads the last `window` events and predicts the next; it has to re-read the window for every
note, so it cannot be stepped live. Its held-out bits per token on the validation pieces that
training.train scores (augmented the same way) are written to OUT_DIR/comparison.json, where the
export puts them in the model card beside the stateful model's.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from improv.events import Vocabulary
from training.data import EVAL_AUGMENT_SEED, Augment, Dataset, WindowSampler, augmented_tokens
from training.model import WindowBiLSTM
from training.errors import TrainingError, reports_errors
from training.train import CONFIG_HELP, TrainConfig, config_path

LN2 = math.log(2)


def windows_of(tokens: np.ndarray, window: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """For each position i >= 1: the `window` tokens before it (left-padded) and the token at i."""
    padded = np.concatenate([np.full(window - 1, pad, dtype=np.int64), tokens])
    index = np.arange(len(tokens) - 1)[:, None] + np.arange(window)[None, :]
    return padded[index], tokens[1:]


@torch.no_grad()
def held_out_bits(model: WindowBiLSTM, pieces: list[np.ndarray], pad: int, batch: int = 512) -> float:
    model.eval()
    nats, count = 0.0, 0
    for tokens in pieces:
        inputs, targets = windows_of(tokens, model.window, pad)
        for start in range(0, len(targets), batch):
            x = torch.from_numpy(inputs[start : start + batch])
            y = torch.from_numpy(targets[start : start + batch])
            nats += nn.functional.cross_entropy(model(x), y, reduction="sum").item()
            count += len(y)
    model.train()
    return nats / count / LN2


@reports_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default", help=CONFIG_HELP + " (default: %(default)s)")
    parser.add_argument("--minutes", type=float, default=6.0, help="training time for the BiLSTM")
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    path = config_path(args.config)
    print(f"config: {path}")
    config = TrainConfig.from_yaml(path)
    torch.set_num_threads(args.threads)
    torch.manual_seed(config.seed)
    vocab = Vocabulary()
    pad = vocab.special("PAD")
    dataset = Dataset.load(Path(config.data))
    sampler = WindowSampler(dataset, "train", vocab, config.seq_len, Augment(**config.augment), config.seed + 1)
    validation = augmented_tokens(dataset, "validation", vocab, 1, EVAL_AUGMENT_SEED)[: config.validation_pieces]
    if not validation:
        raise TrainingError("no validation pieces to compare on; add more files")
    model = WindowBiLSTM(vocab.size, args.window)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    started, steps = time.monotonic(), 0
    while time.monotonic() - started < args.minutes * 60:
        batch = sampler.batch(4)  # (4, T + 1): every position of 4 windows is a training example
        inputs, targets = zip(*(windows_of(row, args.window, pad) for row in batch))
        x, y = torch.from_numpy(np.concatenate(inputs)), torch.from_numpy(np.concatenate(targets))
        keep = y != pad
        loss = nn.functional.cross_entropy(model(x[keep]), y[keep])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
    bits = held_out_bits(model, validation, pad)
    out = Path(config.out_dir) / "comparison.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"window": args.window, "bilstm_bits_per_token": bits, "bilstm_steps": steps,
              "bilstm_minutes": args.minutes, "validation_tokens": int(sum(len(t) - 1 for t in validation)),
              "note": f"BiLSTM trained {args.minutes:g} min on the same augmented windows; both scored on the "
                      "validation pieces, augmented identically"}
    out.write_text(json.dumps(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
