"""What a model's style token tells, and what style guidance costs, on windows shaped as answers.

    python -m training.style_value --checkpoint checkpoints/answers/best.pt --data .cache/data/styles.npz

Validation windows made as training makes them with `answer_share` 1 (training.data.WindowSampler: a
phrase, a pause, the style token again, then the answer; half after another style's phrase). Bits per
token over each answer's first ANSWER_TOKENS tokens: with the right style token, with none (both taken
out) and with each wrong one; then the guided mix (improv.guidance) plain + g (styled - plain) at each
strength g, styled being the right style's logits and plain those with no style token.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from improv.events import Vocabulary
from training.data import Augment, Dataset, WindowSampler
from training.export import load_checkpoint

ANSWER_TOKENS = 64
STRENGTHS = (0.0, 1.0, 2.0, 4.0, 8.0)


def answer_logits(model, vocab: Vocabulary, rows: list[list[int]], firsts: list[int]):
    """Each row's logits and targets over its answer's first ANSWER_TOKENS tokens."""
    pad = vocab.special("PAD")
    x = torch.full((len(rows), max(len(r) for r in rows)), pad, dtype=torch.long)
    for i, row in enumerate(rows):
        x[i, : len(row)] = torch.tensor(row)
    with torch.no_grad():
        logits, _, _ = model(x[:, :-1], *model.initial_state(len(rows)))
    return [(logits[i, f - 1 : f - 1 + ANSWER_TOKENS], x[i, f : f + ANSWER_TOKENS]) for i, f in enumerate(firsts)]


def bits_per_token(pairs, pad: int) -> float:
    total, count = 0.0, 0
    for logits, targets in pairs:
        n = min(len(logits), len(targets))
        keep = targets[:n] != pad
        total += torch.nn.functional.cross_entropy(logits[:n][keep], targets[:n][keep], reduction="sum").item()
        count += int(keep.sum())
    return total / count / np.log(2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", default=".cache/data/styles.npz")
    parser.add_argument("--windows", type=int, default=192)
    parser.add_argument("--seed", type=int, default=99)
    args = parser.parse_args(argv)

    model, checkpoint = load_checkpoint(args.checkpoint)
    vocab = Vocabulary.from_json(checkpoint["vocab"])
    if not vocab.styles:
        print(f"{args.checkpoint} has no styles", file=sys.stderr)
        return 1
    sampler = WindowSampler(Dataset.load(Path(args.data)), "validation", vocab, 256, Augment(), args.seed,
                            answer_share=1.0)
    windows, firsts = sampler.batch_scored(args.windows)
    pad, first_style, n = vocab.special("PAD"), vocab.offset("STYLE"), len(vocab.styles)
    rows, firsts = [list(map(int, w)) for w in windows], [int(f) for f in firsts]
    is_style = lambda t: first_style <= t < first_style + n  # noqa: E731

    styled = answer_logits(model, vocab, rows, firsts)
    plain = answer_logits(model, vocab, [[t for t in r if not is_style(t)] for r in rows], [f - 2 for f in firsts])
    wrong = [bits_per_token(answer_logits(model, vocab, [[first_style + (t - first_style + k) % n if is_style(t) else t
                                                          for t in r] for r in rows], firsts), pad)
             for k in range(1, n)]
    guided = {g: bits_per_token([(p + g * (s - p[: len(s)]), t) for (s, t), (p, _) in zip(styled, plain)], pad)
              for g in STRENGTHS}
    result = {"checkpoint": args.checkpoint, "windows": len(rows), "answer_tokens": ANSWER_TOKENS,
              "right_style": round(bits_per_token(styled, pad), 3), "no_style": round(bits_per_token(plain, pad), 3),
              "wrong_style": round(float(np.mean(wrong)), 3),
              "guided": {str(g): round(b, 3) for g, b in guided.items()}}
    print(f"answer's first {ANSWER_TOKENS} tokens, bits/token: right style {result['right_style']}, no style "
          f"{result['no_style']}, a wrong style {result['wrong_style']} (mean of {n - 1}); guided, by strength: "
          + ", ".join(f"{g:g}: {b:.3f}" for g, b in guided.items()))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
