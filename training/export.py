"""Checkpoint to ONNX under the model file contract, checked, with its Markov baseline and a card.

    python -m training.export --checkpoint checkpoints/default/best.pt --data .cache/data/dataset.npz \
        --out exported_models/improv-lstm.onnx [--quantize int8]

Checks: the graph has fused LSTM nodes; onnxruntime stepping one token at a time (the daemon's path)
agrees with torch over a few hundred steps within 1e-4. Writes NAME.onnx, NAME.markov.npz (the
baseline, trained on the same training tokens) and NAME.md (the model card).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import torch

from improv.evaluate import evaluate, markov_path_for
from improv.events import Vocabulary
from improv.markov import MarkovModel
from improv.model import FACTS_KEY, INPUTS, OUTPUTS, VOCAB_KEY, OnnxModel
from training.data import EVAL_AUGMENT_SEED, Dataset, augmented_tokens, held_out_tokens
from training.model import EventLSTM, ModelConfig, count_parameters

OPSET = 17
AGREEMENT_TOLERANCE = 1e-4
AGREEMENT_STEPS = 300


def load_checkpoint(path: str) -> tuple[EventLSTM, dict]:
    checkpoint = torch.load(path, weights_only=False, map_location="cpu")
    model = EventLSTM(ModelConfig(**checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model"])
    model.eval()
    return model, checkpoint


def export_onnx(model: EventLSTM, path: Path, metadata: dict[str, str]) -> None:
    tokens = torch.zeros((1, 4), dtype=torch.int64)
    h0, c0 = model.initial_state(1)
    batch_time = {0: "batch", 1: "time"}
    torch.onnx.export(
        model, (tokens, h0, c0), str(path), input_names=list(INPUTS), output_names=list(OUTPUTS),
        dynamic_axes={"tokens": batch_time, "logits": batch_time, "h0": {1: "batch"}, "c0": {1: "batch"},
                      "hn": {1: "batch"}, "cn": {1: "batch"}},
        opset_version=OPSET, dynamo=False)
    set_metadata(path, metadata)
    graph = onnx.load(str(path))
    lstm_nodes = [n for n in graph.graph.node if n.op_type == "LSTM"]
    if len(lstm_nodes) < 1:
        raise SystemExit(f"{path}: the exported graph has no fused LSTM node; the live step would be slow")


def set_metadata(path: Path, metadata: dict[str, str]) -> None:
    graph = onnx.load(str(path))
    del graph.metadata_props[:]
    for key, value in metadata.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(path))


def check_agreement(model: EventLSTM, path: Path, vocab: Vocabulary, steps: int = AGREEMENT_STEPS) -> float:
    """Max |logit difference| between torch over the whole sequence and onnxruntime stepping it."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, vocab.size, steps)
    with torch.no_grad():
        h0, c0 = model.initial_state(1)
        expected, _, _ = model(torch.from_numpy(tokens)[None, :], h0, c0)
    runtime = OnnxModel(path)
    stepped = np.stack([runtime.step(int(t)).copy() for t in tokens])
    difference = float(np.abs(stepped - expected[0].numpy()).max())
    if difference > AGREEMENT_TOLERANCE:
        raise SystemExit(f"{path}: onnxruntime differs from torch by {difference:.2e} (> {AGREEMENT_TOLERANCE})")
    return difference


def quantize_int8(path: Path, metadata: dict[str, str]) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = path.with_name(path.name.removesuffix(".onnx") + ".int8.onnx")
    quantize_dynamic(str(path), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=["LSTM", "MatMul", "Gemm"])
    set_metadata(out, metadata)
    return out


def write_card(path: Path, facts: dict, files: dict[str, int]) -> Path:
    card = path.with_name(path.name.removesuffix(".onnx") + ".md")
    model, data, held = facts["model"], facts["data"], facts["held_out"]
    number = lambda value, form: "n/a" if value is None else format(value, form)  # noqa: E731
    rows = "\n".join(
        f"| {name} | {r['files']} | {r['tokens']:,} | {number(r['model_bits_per_token'], '.3f')} | "
        f"{number(r['markov_bits_per_token'], '.3f')} | {number(r['next_pitch_accuracy'], '.1%')} |"
        for name, r in held.items())
    history = "\n".join(f"| {h['epoch']} | {h['step']} | {h['train_bits']:.3f} | {h['validation_bits']:.3f} | "
                        f"{h['elapsed_s'] / 60:.1f} |" for h in facts["training"]["history"])
    sizes = "\n".join(f"- `{name}`: {size / 2**20:.2f} MiB" for name, size in files.items())
    comparison = facts.get("comparison")
    comparison_text = (f"Same validation pieces: stateful LSTM {comparison['stateful_bits_per_token']:.3f} bits/token, "
                       f"windowed BiLSTM (window {comparison['window']}, cannot be stepped live) "
                       f"{comparison['bilstm_bits_per_token']:.3f} bits/token ({comparison['note']})."
                       if comparison else "Not measured for this export (run `python -m training.compare`).")
    int8 = facts.get("int8_held_out")
    int8_text = ("int8 (onnxruntime dynamic quantization of the LSTM and MatMul weights, `NAME.int8.onnx`): "
                 + "; ".join(f"{name} {r['model_bits_per_token']:.3f} bits/token, next-pitch accuracy "
                             f"{r['next_pitch_accuracy']:.1%}" for name, r in int8.items())
                 + ", on the same test pieces." if int8 else "No int8 model was exported (`--quantize int8`).")
    text = f"""# {path.name}

A stateful event LSTM for improv: {model['layers']} layers of {model['hidden']}, embedding {model['embed_dim']},
vocabulary {model['vocab_size']} tokens (NOTE_ON/NOTE_OFF 128 each, TIME_SHIFT 10 ms..1 s, 32 velocity bins,
PAD, START), {model['parameters']:,} parameters. Exported {facts['exported']} with opset {OPSET}; fused LSTM
nodes; onnxruntime stepping one token at a time matches torch within {facts['agreement_max_abs']:.1e}.

## Data
{data['source']}. Pieces by split: {data['pieces']}; notes by split: {data['notes']}; files skipped: {data['failed_files']}.
Split by piece (a hash of the piece's path): no piece is in two splits. Scores have no velocities or
expressive timing, so training windows are augmented as a player would vary them: transposition
within ±5 semitones, tempo ×0.7..1.4 with drift, onset jitter of 15 ms, a velocity level, swell and
per-note jitter.

## Training
{facts['training']['steps']} steps of {facts['training']['batch_size']} windows × {facts['training']['seq_len']} tokens,
{facts['training']['minutes']:.1f} minutes on a 2-core CPU (shared machine), AdamW, cosine learning rate.
{facts['training']['note']}

| epoch | step | train bits/token | validation bits/token | minutes |
|---|---|---|---|---|
{history}

## Held-out loss (test pieces, never seen in training)
The baseline is a variable-order Markov model (orders 0..{facts['markov']['max_order']}, Witten-Bell blending,
pairs seen once pruned above order 1) in the manner of Pachet's Continuator, trained on the same
training pieces. "player-like" is the test pieces augmented once with a fixed seed; "as scored" is
them as written (flat velocity, quantised time). Next-pitch accuracy: where the next token is a
NOTE_ON, how often its pitch is the model's most probable NOTE_ON.

| test set | files | tokens | LSTM bits/token | Markov bits/token | LSTM next-pitch accuracy |
|---|---|---|---|---|---|
{rows}

{int8_text}

Windowed BiLSTM comparison: {comparison_text}

## Files
{sizes}

## Reproduce
```
pip install torch==2.13.0 -e '.[train]'
python -m training.data --music21 {' '.join(data.get('collections', []))} --cache .cache/data
python -m training.train --config {facts['training']['config_file']}
python -m training.compare --config {facts['training']['config_file']}
python -m training.export --checkpoint {facts['training']['checkpoint']} --data .cache/data/dataset.npz --out {path.as_posix()} --quantize int8 --markov-copies 1
```

## License notes
The training data is music21's bundled corpus. Most of its works are public domain, but parts of the
corpus are licensed for non-commercial use only (see music21's corpus license notes), so treat this
model as for non-commercial use unless you retrain it on data you may use commercially.
"""
    card.write_text(text)
    return card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export a checkpoint to an improv ONNX model with its card.")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True, help="the dataset the checkpoint was trained on")
    parser.add_argument("--out", required=True, help="NAME.onnx")
    parser.add_argument("--quantize", choices=["int8"], help="also write NAME.int8.onnx")
    parser.add_argument("--markov-order", type=int, default=5)
    parser.add_argument("--markov-copies", type=int, default=2, help="augmented passes over the training pieces")
    parser.add_argument("--source", default="music21's bundled corpus", help="a line naming the data, for the card")
    parser.add_argument("--collections", nargs="*", default=[], help="music21 collections, for the card")
    parser.add_argument("--config-file", default="training/configs/default.yaml", help="for the card")
    parser.add_argument("--test-pieces", type=int, default=None, help="cap the held-out pieces (quick runs)")
    parser.add_argument("--training-note", default="", help="a line on how the run went, for the card")
    args = parser.parse_args(argv)

    started = time.monotonic()
    model, checkpoint = load_checkpoint(args.checkpoint)
    vocab = Vocabulary.from_json(checkpoint["vocab"])
    dataset = Dataset.load(Path(args.data))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    history = checkpoint["state"]["history"]
    train_config = checkpoint["train_config"]
    facts = {
        "exported": datetime.date.today().isoformat(),
        "model": {**checkpoint["model_config"], "parameters": count_parameters(model)},
        "data": {"source": args.source, "collections": args.collections, **dataset.summary()},
        "training": {"steps": checkpoint["state"]["step"], "batch_size": train_config["batch_size"],
                     "seq_len": train_config["seq_len"], "minutes": checkpoint["state"]["elapsed_s"] / 60,
                     "history": history, "config_file": args.config_file, "checkpoint": args.checkpoint,
                     "note": args.training_note},
    }
    export_onnx(model, out, {VOCAB_KEY: vocab.to_json()})
    facts["agreement_max_abs"] = check_agreement(model, out, vocab)
    print(f"exported {out}; onnxruntime agrees with torch within {facts['agreement_max_abs']:.1e}")

    train_tokens = held_out_tokens(dataset, "train", vocab)
    train_tokens += augmented_tokens(dataset, "train", vocab, args.markov_copies, seed=1)
    markov = MarkovModel.train(train_tokens, vocab.size, max_order=args.markov_order)
    markov.save(markov_path_for(out))
    facts["markov"] = {"max_order": args.markov_order, "training_tokens": int(sum(len(t) for t in train_tokens))}

    test_sets = {"player-like": augmented_tokens(dataset, "test", vocab, 1, EVAL_AUGMENT_SEED)[: args.test_pieces],
                 "as scored": held_out_tokens(dataset, "test", vocab)[: args.test_pieces]}
    runtime = OnnxModel(out)
    facts["held_out"] = {name: evaluate(runtime, tokens, markov) for name, tokens in test_sets.items()}
    comparison = Path(args.checkpoint).with_name("comparison.json")
    if comparison.exists():  # written by training.compare on the same validation tokens
        facts["comparison"] = {**json.loads(comparison.read_text()),
                               "stateful_bits_per_token": checkpoint["state"]["best_bits"]}
    for name, result in facts["held_out"].items():
        print(f"test ({name}): {json.dumps(result)}")

    metadata = {VOCAB_KEY: vocab.to_json(), FACTS_KEY: json.dumps(facts)}
    set_metadata(out, metadata)
    files = {out.name: out.stat().st_size, markov_path_for(out).name: markov_path_for(out).stat().st_size}
    if args.quantize == "int8":
        quantized = quantize_int8(out, metadata)
        files[quantized.name] = quantized.stat().st_size
        int8_results = {name: evaluate(OnnxModel(quantized), tokens, None) for name, tokens in test_sets.items()}
        facts["int8_held_out"] = int8_results
        print(f"int8: {json.dumps(int8_results)}")
    card = write_card(out, facts, files)
    print(f"wrote {card} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
