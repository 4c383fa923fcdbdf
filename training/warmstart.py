"""Warm start: an exported model's float weights (its ONNX initializers) into a torch EventLSTM.

    python -m training.warmstart exported_models/improv-lstm.onnx      # load and check the mapping

The exported graph holds the embedding (Gather), one fused LSTM node a layer (W [1, 4H, in], R [1, 4H, H],
B [1, 8H]: the input and recurrent biases, gates in ONNX's order i, o, f, c) and the head (MatMul by
the transposed weight, Add the bias). torch keeps its gates as i, f, g (= c), o, with bias_ih and
bias_hh apart. A vocabulary that grew at its end (STYLE tokens after VELOCITY) keeps every old row;
the new embedding rows start small and random, the new head rows at zero weight and a low bias (they
are never targets). `check` runs a token sequence through torch and onnxruntime and returns the largest
logit difference, so a wrong mapping is found before any training.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from training.errors import TrainingError
from training.model import EventLSTM, ModelConfig

NEW_HEAD_BIAS = -8.0  # logits of new (never generated) tokens: far below any real token's


def onnx_weights(path: str) -> tuple[dict[str, np.ndarray], list[tuple[str, str, str]], str]:
    """(initializers by name, each LSTM node's (W, R, B) names in layer order, the head MatMul weight's name)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    weights = {init.name: numpy_helper.to_array(init).copy() for init in graph.initializer}
    lstms = [tuple(node.input[1:4]) for node in graph.node if node.op_type == "LSTM"]
    heads = [node.input[1] for node in graph.node if node.op_type == "MatMul" and node.input[1] in weights]
    if not lstms or len(heads) != 1 or "embed.weight" not in weights or "head.bias" not in weights:
        raise TrainingError(f"{path}: not a float model exported by training/export.py (an int8 file holds no float "
                            "LSTM weights to start from; give the float .onnx)")
    return weights, lstms, heads[0]


def _torch_gates(onnx_gates: np.ndarray, hidden: int) -> np.ndarray:
    """Rows in ONNX's gate order i, o, f, c -> torch's i, f, g, o."""
    i, o, f, c = (onnx_gates[k * hidden : (k + 1) * hidden] for k in range(4))
    return np.concatenate([i, f, c, o])


def load_onnx_into(model: EventLSTM, path: str, seed: int = 0) -> dict:
    """Copy the ONNX model's weights into `model` (its vocabulary may be the same or grown at the end)."""
    weights, lstms, head = onnx_weights(path)
    config = model.config
    old_vocab, embed_dim = weights["embed.weight"].shape
    hidden = weights[lstms[0][1]].shape[-1]
    if (len(lstms), hidden, embed_dim) != (config.layers, config.hidden, config.embed_dim):
        raise TrainingError(f"{path}: {len(lstms)} layers of {hidden}, embedding {embed_dim}; the model to start is "
                            f"{config.layers} layers of {config.hidden}, embedding {config.embed_dim}")
    if old_vocab > config.vocab_size:
        raise TrainingError(f"{path}: vocabulary {old_vocab} is larger than the new model's {config.vocab_size}")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        embed = model.embed.weight
        embed[:old_vocab] = torch.from_numpy(weights["embed.weight"])
        if config.vocab_size > old_vocab:  # new rows: small, at the scale of the old rows' spread
            scale = float(weights["embed.weight"].std()) * 0.5
            embed[old_vocab:] = torch.randn(config.vocab_size - old_vocab, embed_dim, generator=generator) * scale
        for layer, (w, r, b) in enumerate(lstms):
            bias = weights[b][0]
            getattr(model.lstm, f"weight_ih_l{layer}").copy_(torch.from_numpy(_torch_gates(weights[w][0], hidden)))
            getattr(model.lstm, f"weight_hh_l{layer}").copy_(torch.from_numpy(_torch_gates(weights[r][0], hidden)))
            getattr(model.lstm, f"bias_ih_l{layer}").copy_(torch.from_numpy(_torch_gates(bias[: 4 * hidden], hidden)))
            getattr(model.lstm, f"bias_hh_l{layer}").copy_(torch.from_numpy(_torch_gates(bias[4 * hidden :], hidden)))
        model.head.weight.zero_()
        model.head.bias.fill_(NEW_HEAD_BIAS)
        model.head.weight[:old_vocab] = torch.from_numpy(weights[head].T.copy())
        model.head.bias[:old_vocab] = torch.from_numpy(weights["head.bias"])
    return {"from": str(path), "old_vocab": int(old_vocab), "new_vocab": config.vocab_size}


def check(model: EventLSTM, path: str, steps: int = 300, seed: int = 0) -> float:
    """Max |logit difference| over the old vocabulary between torch and onnxruntime on a random sequence."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    old_vocab = session.get_outputs()[0].shape[-1]
    tokens = np.random.default_rng(seed).integers(0, old_vocab, (1, steps)).astype(np.int64)
    state = np.zeros((model.config.layers, 1, model.config.hidden), np.float32)
    expected = session.run(["logits"], {"tokens": tokens, "h0": state, "c0": state})[0][0]
    model.eval()
    with torch.no_grad():
        h0, c0 = model.initial_state(1)
        logits, _, _ = model(torch.from_numpy(tokens), h0, c0)
    model.train()
    return float(np.abs(logits[0, :, :old_vocab].numpy() - expected).max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx")
    parser.add_argument("--extra-tokens", type=int, default=0, help="grow the vocabulary by this many tokens")
    args = parser.parse_args(argv)
    weights, lstms, _ = onnx_weights(args.onnx)
    vocab, embed_dim = weights["embed.weight"].shape
    model = EventLSTM(ModelConfig(vocab_size=vocab + args.extra_tokens, embed_dim=embed_dim,
                                  hidden=weights[lstms[0][1]].shape[-1], layers=len(lstms)))
    load_onnx_into(model, args.onnx)
    print(f"torch reproduces {args.onnx}'s logits within {check(model, args.onnx):.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
