"""Held-out loss in bits per token, the Markov baseline's beside it, and next-pitch accuracy."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from improv.markov import MarkovModel
from improv.model import OnnxModel

CHUNK_TOKENS = 1024  # one onnxruntime call per chunk, state carried between chunks


def markov_path_for(model_path: str | Path) -> Path:
    """The baseline ships beside its model: NAME.onnx -> NAME.markov.npz."""
    path = Path(model_path)
    stem = path.name.removesuffix(".onnx").removesuffix(".int8")
    return path.with_name(stem + ".markov.npz")


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def model_logits(model: OnnxModel, tokens: np.ndarray) -> np.ndarray:
    """The LSTM's next-token logits after each token but the last, (T - 1, V), the state carried
    from chunk to chunk as the daemon carries it."""
    state, chunks = None, []
    for start in range(0, len(tokens) - 1, CHUNK_TOKENS):
        logits, state = model.run(tokens[None, start : start + CHUNK_TOKENS], state)
        chunks.append(logits[0])
    return np.concatenate(chunks)[: len(tokens) - 1]


def given(vocab, tokens: np.ndarray) -> np.ndarray:
    """Which tokens are given, never predicted (STYLE tokens): heard, not scored."""
    if not vocab.styles:
        return np.zeros(len(tokens), dtype=bool)
    return tokens >= vocab.offset("STYLE")


def model_scores(model: OnnxModel, tokens: np.ndarray, logits: np.ndarray) -> tuple[float, int, int, int]:
    """(total bits, tokens predicted, NOTE_ON targets, NOTE_ON targets whose pitch was the top pitch).
    A style token is heard but not scored."""
    on, pitches = model.vocab.offset("NOTE_ON"), 128
    targets = tokens[1:]
    scored = ~given(model.vocab, targets)
    bits = -_log_softmax(logits)[np.arange(len(targets)), targets][scored].sum() / math.log(2)
    is_note = (targets >= on) & (targets < on + pitches)
    top_pitch = logits[is_note, on : on + pitches].argmax(axis=-1)
    return bits, int(scored.sum()), int(is_note.sum()), int((top_pitch == targets[is_note] - on).sum())


def evaluate(model: OnnxModel, sequences: list[np.ndarray], markov: MarkovModel | None,
             logits: list[np.ndarray] | None = None) -> dict:
    """`logits`: each sequence's model_logits, when the caller has them already."""
    bits = predicted = note_targets = note_hits = 0
    markov_bits = 0.0
    for index, tokens in enumerate(sequences):
        tokens = np.asarray(tokens, dtype=np.int64)
        b, n, t, h = model_scores(model, tokens, logits[index] if logits else model_logits(model, tokens))
        bits, predicted, note_targets, note_hits = bits + b, predicted + n, note_targets + t, note_hits + h
        if markov is not None:  # the baseline has no styles: it scores the same tokens without them
            markov_bits += markov.bits(tokens[~given(model.vocab, tokens)])[0]
    return {
        "files": len(sequences),
        "tokens": predicted,
        "model_bits_per_token": bits / predicted if predicted else None,
        "markov_bits_per_token": markov_bits / predicted if (markov is not None and predicted) else None,
        "next_pitch_accuracy": note_hits / note_targets if note_targets else None,
    }


def adapted_scores(model: OnnxModel, tokens: np.ndarray, attachment: float, logits: np.ndarray | None = None) -> dict:
    """Prequential scores over the second half of a piece, its first half heard: every token is scored
    by the LSTM alone and by the LSTM mixed with the session memory, then the memory learns it, as
    improv learns a player live. Bits per note divide a half's bits by its note-ons."""
    from improv.memory import ContextClasses, SessionMemory

    tokens = np.asarray(tokens, dtype=np.int64)
    if logits is None:
        logits = model_logits(model, tokens)
    memory = SessionMemory(model.vocab.size, classes=ContextClasses.for_vocab(model.vocab))  # as the engine's
    memory.learn(int(tokens[0]))
    half = (len(tokens) - 1) // 2
    model_bits = adapted_bits = 0.0
    style = given(model.vocab, tokens)
    for position, target in enumerate(tokens[1:].tolist()):
        if style[position + 1]:  # heard, not scored or learnt
            continue
        log_p = _log_softmax(logits[position])
        if position >= half:
            model_bits -= log_p[target] / math.log(2)
            mixed, _ = memory.mix(logits[position], memory.recent, attachment)  # the logits, when it has no say
            adapted_bits -= _log_softmax(mixed)[target] / math.log(2)
        memory.learn(target, float(np.exp(log_p[target])))
    on = model.vocab.offset("NOTE_ON")
    second = tokens[1 + half :]
    return {"tokens": len(second), "notes": int(((second >= on) & (second < on + 128)).sum()),
            "model_bits": model_bits, "adapted_bits": adapted_bits}


def evaluate_adapted(model: OnnxModel, sequences: list[np.ndarray], attachment: float,
                     logits: list[np.ndarray] | None = None) -> dict:
    totals = {"tokens": 0, "notes": 0, "model_bits": 0.0, "adapted_bits": 0.0}
    for index, tokens in enumerate(sequences):
        for key, value in adapted_scores(model, tokens, attachment, logits[index] if logits else None).items():
            totals[key] += value

    def per(bits: float, count: int) -> float | None:
        return round(float(bits) / count, 4) if count else None

    return {"attachment": attachment, "adapted_tokens": totals["tokens"], "adapted_notes": totals["notes"],
            "model_bits_per_token": per(totals["model_bits"], totals["tokens"]),
            "adapted_bits_per_token": per(totals["adapted_bits"], totals["tokens"]),
            "model_bits_per_note": per(totals["model_bits"], totals["notes"]),
            "adapted_bits_per_note": per(totals["adapted_bits"], totals["notes"])}
