"""Your own MIDI folder to an exported improv model, in one command.

    python -m training.pipeline --midi ~/my-midi --out exported_models/mine.onnx
    python -m training.pipeline --midi ~/my-midi --out /tmp/quick.onnx --config tiny   # a quick first run

Runs the three steps that are also runnable alone: training.data (parse and cache), training.train
(settings from --config, data and checkpoint folders set here), training.export (ONNX, Markov
baseline, model card). Then: improv run --model exported_models/mine.onnx

--config names a packaged config or a YAML file. `default` is the shipped model's settings (a 2 x 512
LSTM, 10 epochs, capped at 110 minutes); `tiny` is a 2 x 64 LSTM trained for 3 short epochs, which
runs in well under a minute of training on a 2-core CPU: a check that the data and the whole path work
before a long run, not a model to play with.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import replace
from pathlib import Path

from training import data, export
from training.errors import reports_errors
from training.train import CONFIG_HELP, TrainConfig, config_path, train


@reports_errors
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--midi", nargs="*", default=[], metavar="DIR", help="folders of .mid/.midi files (recursive)")
    parser.add_argument("--music21", nargs="*", default=[], metavar="NAME", help="music21 corpus collections")
    parser.add_argument("--maestro", metavar="DIR", help="a MAESTRO-layout folder (uses its CSV split)")
    parser.add_argument("--limit", type=int, help="use only the first N files of each source (a quick look)")
    parser.add_argument("--out", required=True, help="NAME.onnx to write (with NAME.md and NAME.markov.npz)")
    parser.add_argument("--config", default="default", help=CONFIG_HELP + " (default: %(default)s)")
    parser.add_argument("--work", default=".cache/pipeline", help="cache and checkpoints (git-ignored)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted training run")
    parser.add_argument("--quantize", choices=["int8"])
    args = parser.parse_args(argv)
    config_file = config_path(args.config)  # before the parsing step, so a wrong name fails at once

    work = Path(args.work) / Path(args.out).name.removesuffix(".onnx")
    jobs, overrides = [], {}
    if args.music21:
        jobs += data.music21_paths(args.music21)[: args.limit]
    for folder in args.midi:
        jobs += data.midi_folder_paths(folder)[: args.limit]
    if args.maestro:
        maestro_jobs, overrides = data.maestro_paths(args.maestro)
        jobs += maestro_jobs[: args.limit]
    if not jobs:
        parser.error("no files: give --midi folders, --music21 collections or --maestro")
    print(f"step 1/3: parsing {len(jobs)} files")
    dataset = data.build_dataset(jobs, str(work / "cache"), overrides)
    dataset_path = work / "dataset.npz"
    dataset.save(dataset_path)
    for line in data.failures_report(dataset.failures):
        print(line, file=sys.stderr)
    summary = dataset.summary()
    print(f"dataset: {summary}")
    print(data.duplicates_note(summary))

    print(f"step 2/3: training with {config_file}")
    config = replace(TrainConfig.from_yaml(config_file), data=str(dataset_path), out_dir=str(work / "checkpoints"))
    best = train(config, resume=args.resume)

    print("step 3/3: export")
    sources = [f"MIDI folder {f}" for f in args.midi] + ([f"music21 {' '.join(args.music21)}"] if args.music21 else [])
    sources += [f"MAESTRO {args.maestro}"] if args.maestro else []
    export_args = ["--checkpoint", str(best), "--data", str(dataset_path), "--out", args.out,
                   "--source", "; ".join(sources), "--config-file", args.config,
                   "--reproduce", shlex.join(["python", "-m", "training.pipeline", *argv])]
    if args.music21:
        export_args += ["--collections", *args.music21]
    if args.quantize:
        export_args += ["--quantize", args.quantize]
    if export.main(export_args) != 0:  # export has printed its error
        return 1
    print(f"done: improv run --model {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
