"""Checkpoint to ONNX under the model file contract, checked, with its Markov baseline and a card.

    python -m training.export --checkpoint checkpoints/default/best.pt --data .cache/data/dataset.npz \
        --out exported_models/improv-lstm.onnx [--quantize int8]

Checks: the graph has fused LSTM nodes; onnxruntime stepping one token at a time (the daemon's path)
agrees with torch over a few hundred steps within 1e-4. Writes NAME.onnx, NAME.markov.npz (the
baseline, trained on the same training tokens) and NAME.md (the model card).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import logging
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import torch

from improv.evaluate import evaluate, evaluate_adapted, markov_path_for
from improv.events import Vocabulary
from improv.markov import MarkovModel
from improv.memory import BALANCED_ATTACHMENT
from improv.model import FACTS_KEY, INPUTS, OUTPUTS, VOCAB_KEY, OnnxModel
from training.data import EVAL_AUGMENT_SEED, Augment, Dataset, augmented_tokens, duplicates_note, held_out_tokens
from training.errors import TrainingError, reports_errors
from training.model import EventLSTM, ModelConfig, count_parameters
from training.train import machine_description

OPSET = 17
AGREEMENT_TOLERANCE = 1e-4
AGREEMENT_STEPS = 300


def load_checkpoint(path: str) -> tuple[EventLSTM, dict]:
    """The checkpoint's model on the CPU in float32, wherever it was trained: the ONNX file is the same."""
    checkpoint = torch.load(path, weights_only=False, map_location="cpu")
    model = EventLSTM(ModelConfig(**checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model"])
    model.float().eval()
    return model, checkpoint


@contextlib.contextmanager
def quiet_export_notices():
    """Silence the exporters' notices that do not apply to this model; other warnings still show.

    torch: the TorchScript exporter is deprecated (it is chosen on purpose: it writes the fused LSTM
    node the live step needs) and warns that a batch size other than 1 needs h0/c0 as inputs, which
    they are; its tracer flags the shape checks inside torch's own LSTM module. onnxruntime: dynamic
    quantization suggests a pre-processing pass meant for static quantization; the int8 figures in the
    card are measured without it.
    """
    def not_preprocessing_hint(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Please consider to run pre-processing before quantization")

    root = logging.getLogger()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx\._internal")
        warnings.filterwarnings("ignore", message=r"You are using the legacy TorchScript-based ONNX export",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"Exporting a model to ONNX with a batch_size other than 1",
                                category=UserWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"torch\.nn\.modules\.rnn")
        root.addFilter(not_preprocessing_hint)
        try:
            yield
        finally:
            root.removeFilter(not_preprocessing_hint)


def export_onnx(model: EventLSTM, path: Path, metadata: dict[str, str]) -> None:
    tokens = torch.zeros((1, 4), dtype=torch.int64)
    h0, c0 = model.initial_state(1)
    batch_time = {0: "batch", 1: "time"}
    with quiet_export_notices():
        torch.onnx.export(
            model, (tokens, h0, c0), str(path), input_names=list(INPUTS), output_names=list(OUTPUTS),
            dynamic_axes={"tokens": batch_time, "logits": batch_time, "h0": {1: "batch"}, "c0": {1: "batch"},
                          "hn": {1: "batch"}, "cn": {1: "batch"}},
            opset_version=OPSET, dynamo=False)
    set_metadata(path, metadata)
    graph = onnx.load(str(path))
    lstm_nodes = [n for n in graph.graph.node if n.op_type == "LSTM"]
    if len(lstm_nodes) < 1:
        raise TrainingError(f"{path}: the exported graph has no fused LSTM node; the live step would be slow")


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
        raise TrainingError(f"{path}: onnxruntime differs from torch by {difference:.2e} (> {AGREEMENT_TOLERANCE})")
    return difference


def quantize_int8(path: Path, metadata: dict[str, str]) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = path.with_name(path.name.removesuffix(".onnx") + ".int8.onnx")
    with quiet_export_notices():
        quantize_dynamic(str(path), str(out), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["LSTM", "MatMul", "Gemm"])
    set_metadata(out, metadata)
    return out


def run_history(checkpoint_path: str, checkpoint: dict) -> list[dict]:
    """Every epoch of the run, as its log shows them.

    best.pt is saved at its own epoch, so the epochs after it are only in last.pt beside it; last.pt
    is read when its history continues this checkpoint's (the same run, resumed or not).
    """
    history = checkpoint["state"]["history"]
    last = Path(checkpoint_path).with_name("last.pt")
    if last.exists() and last.resolve() != Path(checkpoint_path).resolve():
        later = torch.load(last, weights_only=False, map_location="cpu")["state"]["history"]
        if later[: len(history)] == history:
            return later
    return history


def describe_sources(piece_ids: list[str]) -> str:
    """The data's sources from its piece ids (music21/COLLECTION/..., maestro/..., FOLDER/...)."""
    music21 = Counter(pid.split("/")[1] for pid in piece_ids if pid.startswith("music21/"))
    others = Counter(pid.split("/", 1)[0] for pid in piece_ids if not pid.startswith("music21/"))
    parts = [f"music21's bundled corpus ({', '.join(f'{name}: {n} pieces' for name, n in sorted(music21.items()))})"
             ] if music21 else []
    parts += [f"{'MAESTRO' if name == 'maestro' else 'MIDI folder ' + name} ({n} pieces)"
              for name, n in sorted(others.items())]
    return "; ".join(parts) or "no pieces"


def license_text(piece_ids: list[str]) -> str:
    """License notes for the sources the model was trained on (from its piece ids)."""
    music21 = any(pid.startswith("music21/") for pid in piece_ids)
    maestro = any(pid.startswith("maestro/") for pid in piece_ids)
    yours = any(not pid.startswith(("music21/", "maestro/")) for pid in piece_ids)
    data = "The training data is" if music21 + maestro + yours == 1 else "Part of the training data is"
    notes = []
    if music21:
        notes.append(f"{data} music21's bundled corpus. Most of its works are public domain, but parts of the "
                     "corpus are licensed for non-commercial use only (see music21's corpus license notes), so "
                     "treat this model as for non-commercial use unless you retrain it on data you may use "
                     "commercially.")
    if maestro:
        notes.append(f"{data} MAESTRO, licensed CC BY-NC-SA 4.0 (non-commercial, share-alike).")
    if yours:
        notes.append(f"{data} MIDI files you supplied: the license of your files applies.")
    return "\n\n".join(notes)


def augment_text(settings: dict | None) -> str:
    if settings is None:
        return "Training windows were not augmented (`augment: null`)."
    a = Augment(**settings)
    as_written = f"; {a.as_written:.0%} of windows are kept as written" if a.as_written else ""
    return (f"Training windows are augmented as a player would vary a score: transposition within "
            f"±{a.transpose} semitones, tempo ×{a.tempo_stretch[0]:g}..{a.tempo_stretch[1]:g} with drift, onset "
            f"jitter of {a.timing_jitter_ms:g} ms, a velocity level, swell and per-note jitter{as_written}.")


def adapted_text(adapted: dict, number) -> str:
    """The card's session memory section: each test piece's second half with its first half heard."""
    if not adapted:
        return "With the session memory: not measured (no test pieces)."
    attachment = next(iter(adapted.values()))["attachment"]
    rows = "\n".join(f"| {name} | {r['adapted_tokens']:,} | {r['adapted_notes']:,} | "
                     f"{number(r['model_bits_per_note'], '.2f')} | {number(r['adapted_bits_per_note'], '.2f')} | "
                     f"{number(r['model_bits_per_token'], '.3f')} | {number(r['adapted_bits_per_token'], '.3f')} |"
                     for name, r in adapted.items())
    return (f"With the session memory (improv/memory.py, attachment {attachment}): each test piece's second half, "
            "its first half heard and every token scored before the memory learns it (`improv eval DIR --adapt`).\n\n"
            "| test set | tokens | notes | LSTM bits/note | with memory | LSTM bits/token | with memory |\n"
            f"|---|---|---|---|---|---|---|\n{rows}")


def write_card(path: Path, facts: dict, files: dict[str, int]) -> Path:
    card = path.with_name(path.name.removesuffix(".onnx") + ".md")
    model, data, held, training = facts["model"], facts["data"], facts["held_out"], facts["training"]
    number = lambda value, form: "n/a" if value is None else format(value, form)  # noqa: E731
    rows = "\n".join(
        f"| {name} | {r['files']} | {r['tokens']:,} | {number(r['model_bits_per_token'], '.3f')} | "
        f"{number(r['markov_bits_per_token'], '.3f')} | {number(r['next_pitch_accuracy'], '.1%')} |"
        for name, r in held.items())
    header = "| test set | files | tokens | LSTM bits/token | Markov bits/token | LSTM next-pitch accuracy |"
    held_out_table = f"{header}\n|---|---|---|---|---|---|\n{rows}" if held else facts["no_test"]
    adapted_table = adapted_text(facts.get("adapted") or {}, number)
    history = "\n".join(f"| {h['epoch']} | {h['step']} | {h['train_bits']:.3f} | "
                        f"{number(h['validation_bits'], '.3f')} | {h['elapsed_s'] / 60:.1f} |"
                        for h in training["history"])
    last = training["history"][-1]
    if data.get("duplicates_in_another_split"):
        split_text = "Split by piece path: copies of a piece may be in two splits."
    else:
        split_text = ("Split by piece content: copies of a piece (the same notes) share a split, which a hash of "
                      "the first copy's path gives (or a MAESTRO CSV names), so no piece is in two splits.")
    sizes = "\n".join(f"- `{name}`: {size / 2**20:.2f} MiB" for name, size in files.items())
    comparison = facts.get("comparison")
    comparison_text = (f"Same validation pieces: stateful LSTM {comparison['stateful_bits_per_token']:.3f} bits/token, "
                       f"windowed BiLSTM (window {comparison['window']}, cannot be stepped live) "
                       f"{comparison['bilstm_bits_per_token']:.3f} bits/token ({comparison['note']})."
                       if comparison else "Not measured for this export (run `python -m training.compare`).")
    int8 = facts.get("int8_held_out")
    if int8 is None:
        int8_text = "No int8 model was exported (`--quantize int8`)."
    elif not int8:
        int8_text = "An int8 model was exported (`NAME.int8.onnx`); not evaluated: there are no test pieces."
    else:
        int8_text = ("int8 (onnxruntime dynamic quantization of the LSTM and MatMul weights, `NAME.int8.onnx`): "
                     + "; ".join(f"{name} {number(r['model_bits_per_token'], '.3f')} bits/token, next-pitch accuracy "
                                 f"{number(r['next_pitch_accuracy'], '.1%')}" for name, r in int8.items())
                     + ", on the same test pieces.")
    styles = facts.get("styles") or []
    style_tokens = f", STYLE {len(styles)}: {', '.join(styles)}" if styles else ""
    style_text = f"\n{facts['style_text']}\n" if facts.get("style_text") else ""
    test_text = f"\n{facts['test_text']}\n" if facts.get("test_text") else ""
    text = f"""# {path.name}

A stateful event LSTM for improv: {model['layers']} layers of {model['hidden']}, embedding {model['embed_dim']},
vocabulary {model['vocab_size']} tokens (NOTE_ON/NOTE_OFF 128 each, TIME_SHIFT 10 ms..1 s, 32 velocity bins,
PAD, START{style_tokens}), {model['parameters']:,} parameters. Exported {facts['exported']} with opset {OPSET}; fused LSTM
nodes; onnxruntime stepping one token at a time matches torch within {facts['agreement_max_abs']:.1e}.

## Data
{data['source']}. Pieces by split: {data['pieces']}; notes by split: {data['notes']}; files skipped: {data['failed_files']}.
{duplicates_note(data)}.
{split_text}
{training['augment_text']}
{style_text}
## Training
{last['step']} steps of {training['batch_size']} windows × {training['seq_len']} tokens,
{last['elapsed_s'] / 60:.1f} minutes on {training['machine']}, AdamW, cosine learning rate.
{f"The exported checkpoint is from epoch {training['exported_epoch']}. {training['note']}".strip()}

| epoch | step | train bits/token | validation bits/token | minutes |
|---|---|---|---|---|
{history}

## Held-out loss (test pieces, never seen in training)
The baseline is a variable-order Markov model (orders 0..{facts['markov']['max_order']}, Witten-Bell blending,
pairs seen once pruned above order 1) in the manner of Pachet's Continuator, trained on the same
training pieces. "player-like" is the test pieces augmented once with a fixed seed; "as scored" is
them as written (flat velocity, quantised time). Next-pitch accuracy: where the next token is a
NOTE_ON, how often its pitch is the model's most probable NOTE_ON.
{test_text}
{held_out_table}

{int8_text}

{adapted_table}

Windowed BiLSTM comparison: {comparison_text}

## Files
{sizes}

## Reproduce
```
pip install torch==2.13.0 -e '.[train]'
{facts['reproduce']}
```

## License notes
{facts['license']}
"""
    card.write_text(text)
    return card


def reproduce_commands(args: argparse.Namespace, out: Path, piece_ids: list[str]) -> str:
    """The four steps that made this export, for the card (the pipeline gives its own one command).

    Folders are not recorded in the dataset, so they appear as DIR; music21 collections are named.
    """
    collections = args.collections or sorted({pid.split("/")[1] for pid in piece_ids if pid.startswith("music21/")})
    sources = [f"--music21 {' '.join(collections)}"] if collections else []
    sources += ["--maestro DIR"] if any(pid.startswith("maestro/") for pid in piece_ids) else []
    sources += ["--midi DIR"] if any(not pid.startswith(("music21/", "maestro/")) for pid in piece_ids) else []
    config = args.config_file or "CONFIG.yaml"
    quantize = " --quantize int8" if args.quantize else ""
    return "\n".join([
        f"python -m training.data {' '.join(sources)} --cache .cache/data",
        f"python -m training.train --config {config}",
        f"python -m training.compare --config {config}",
        f"python -m training.export --checkpoint {args.checkpoint} --data {args.data} --out {out.as_posix()}{quantize} "
        f"--markov-copies {args.markov_copies}"])


@reports_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export a checkpoint to an improv ONNX model with its card.")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True, help="the dataset the checkpoint was trained on")
    parser.add_argument("--out", required=True, help="NAME.onnx")
    parser.add_argument("--quantize", choices=["int8"], help="also write NAME.int8.onnx")
    parser.add_argument("--markov-order", type=int, default=5)
    parser.add_argument("--markov-copies", type=int, default=2, help="augmented passes over the training pieces")
    parser.add_argument("--source", help="a line naming the data, for the card (default: from the dataset's pieces)")
    parser.add_argument("--collections", nargs="*", default=[], help="music21 collections, for the card")
    parser.add_argument("--config-file", help="the training config (a packaged name or a path), for the card")
    parser.add_argument("--reproduce", help="the command that made this model, for the card (default: the four steps)")
    parser.add_argument("--test-pieces", type=int, default=None, help="cap the held-out pieces (quick runs)")
    parser.add_argument("--training-note", default="", help="a line on how the run went, for the card")
    parser.add_argument("--test-by-path", nargs="*", default=None, metavar="NAME",
                        help="score the test pieces of these music21 collections by the path hash alone, as "
                             "training.heldout picks them (the pieces, order and augmentation of the cards of models "
                             "made before splits went by content), instead of the dataset's test split")
    parser.add_argument("--cache", default=".cache/data", help="with --test-by-path: the parsed pieces' cache")
    args = parser.parse_args(argv)

    started = time.monotonic()
    model, checkpoint = load_checkpoint(args.checkpoint)
    vocab = Vocabulary.from_json(checkpoint["vocab"])
    dataset = Dataset.load(Path(args.data))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    train_config = checkpoint["train_config"]
    machines = checkpoint["state"].get("machines")  # recorded by training.train; absent in older checkpoints
    facts = {
        "exported": datetime.date.today().isoformat(),
        "model": {**checkpoint["model_config"], "parameters": count_parameters(model)},
        "data": {"source": args.source or describe_sources(dataset.piece_ids), "collections": args.collections,
                 **dataset.summary()},
        "training": {"steps": checkpoint["state"]["step"], "batch_size": train_config["batch_size"],
                     "seq_len": train_config["seq_len"], "minutes": checkpoint["state"]["elapsed_s"] / 60,
                     "history": run_history(args.checkpoint, checkpoint),
                     "exported_epoch": checkpoint["state"]["epoch"],
                     "machine": " and ".join(machines) if machines
                                else machine_description() + " (measured at export: the checkpoint does not say)",
                     "augment_text": augment_text(train_config.get("augment", {})),
                     "config_file": args.config_file, "checkpoint": args.checkpoint, "note": args.training_note},
        "reproduce": args.reproduce or reproduce_commands(args, out, dataset.piece_ids),
        "license": license_text(dataset.piece_ids),
        "styles": list(vocab.styles),
    }
    if vocab.styles:
        counts = dataset.summary()["styles"]
        facts["style_text"] = (
            "Styles: a STYLE token after START names the piece's family (" + "; ".join(
                f"{name}: {counts[name]['train']} training pieces" for name in vocab.styles) + "). Every training "
            f"window begins with START and its piece's style token ({train_config.get('style_dropout', 0):.0%} of "
            "windows without one, so the model also runs with no style chosen); a style token is heard, never "
            "a target and never generated.")
    plain = dataclasses.replace(vocab, styles=())  # the same tokens without a style token
    export_onnx(model, out, {VOCAB_KEY: vocab.to_json()})
    facts["agreement_max_abs"] = check_agreement(model, out, vocab)
    print(f"exported {out}; onnxruntime agrees with torch within {facts['agreement_max_abs']:.1e}")

    # The baseline has no styles: it is trained and scored on the tokens without a style token.
    train_tokens = held_out_tokens(dataset, "train", plain)
    train_tokens += augmented_tokens(dataset, "train", plain, args.markov_copies, seed=1)
    markov = MarkovModel.train(train_tokens, vocab.size, max_order=args.markov_order)
    markov.save(markov_path_for(out))
    facts["markov"] = {"max_order": args.markov_order, "training_tokens": int(sum(len(t) for t in train_tokens))}

    test_sets = {}
    test_data = dataset
    if args.test_by_path is not None:
        from training.heldout import held_out_dataset

        test_data = held_out_dataset(args.test_by_path, "test", args.cache)
        in_training = set(dataset.piece_ids[i] for i in dataset.pieces("train"))
        leaked = [pid for pid in test_data.piece_ids if pid in in_training]
        if leaked:
            raise TrainingError(f"{len(leaked)} of the test pieces by path are training pieces of {args.data} "
                                f"(e.g. {leaked[0]}); build the dataset with --test-by-path")
        facts["test_text"] = (f"The test pieces are the {len(test_data.piece_ids)} of {' '.join(args.test_by_path)} "
                              "that the path hash alone holds out (`python -m training.heldout`: the previous "
                              "shipped model's test pieces, in the same order and augmented with the same draws); "
                              "the dataset kept them, and every copy of them, out of training.")
    test_pieces = test_data.pieces("test")[: args.test_pieces]
    if test_pieces:
        test_sets = {"player-like": augmented_tokens(test_data, "test", vocab, 1, EVAL_AUGMENT_SEED, test_pieces),
                     "as scored": held_out_tokens(test_data, "test", vocab, test_pieces)}
        if vocab.styles:
            test_sets["player-like, no style token"] = augmented_tokens(test_data, "test", plain, 1, EVAL_AUGMENT_SEED,
                                                                        test_pieces)
            facts["test_text"] = (facts.get("test_text", "") + " Each piece is scored after START and its style's "
                                  "token (the token is heard, not scored), except in the row without a style token.")
    else:
        facts["no_test"] = (f"No test pieces: the data had {len(dataset.piece_ids)} pieces and the split (about 1 "
                            "piece in 20 goes to test) gave none to test, so the held-out table is left out; "
                            "add more files.")
        print(facts["no_test"])
    runtime = OnnxModel(out)
    facts["held_out"] = {name: evaluate(runtime, tokens, markov) for name, tokens in test_sets.items()}
    facts["adapted"] = {name: evaluate_adapted(runtime, tokens, BALANCED_ATTACHMENT) for name, tokens in test_sets.items()
                        if name in ("player-like", "as scored")}
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
        if int8_results:
            print(f"int8: {json.dumps(int8_results)}")
    card = write_card(out, facts, files)
    print(f"wrote {card} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
