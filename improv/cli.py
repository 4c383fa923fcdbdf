"""The `improv` command. Every expected failure is one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from improv.config import rules
from improv.errors import ImprovError

EXIT_ERROR = 1


def _model(path: str | None):
    from improv.model import OnnxModel

    return OnnxModel(path)


def cmd_tokens(args) -> int:
    from improv.midi.files import encode_file

    model = _model(args.model)
    tokens = encode_file(model.vocab, args.file)
    if not args.ids:
        print(f"# TIME_SHIFT_n waits n x {model.vocab.time_step_ms} ms; VELOCITY_b is bin b of "
              f"{model.vocab.velocity_bins}; NOTE_ON_p / NOTE_OFF_p are MIDI pitch p", file=sys.stderr)
    print(" ".join(str(t) if args.ids else model.vocab.name(t) for t in tokens))
    return 0


def cmd_generate(args) -> int:
    import numpy as np

    from improv import config as config_module
    from improv.events import DRUM_CHANNEL, NoteEvent
    from improv.midi.files import read_messages, write_tracks
    from improv.model import open_stepped
    from improv.musicstats import note_stats
    from improv.offline import continue_performance

    from improv.midi.files import check_output_path

    config, _ = config_module.discover(args.config)
    apply_setting_flags(config, args)
    if args.seconds <= 0:
        raise ImprovError(f"--seconds must be > 0, got {args.seconds}")
    check_output_path(args.out)
    model = open_stepped(args.model or config.model.path, lambda: config.model.style_strength)
    seed = read_messages(args.seed)
    rng = np.random.default_rng(args.random_seed if args.random_seed is not None else config.sampling.seed)
    continuation = continue_performance(model, config, seed, args.seconds, rng)
    player = [NoteEvent(t, m.note, m.velocity if m.type == "note_on" else 0) for t, m in seed
              if m.type in ("note_on", "note_off") and m.channel != DRUM_CHANNEL]
    # In time, the file carries the tempo and meter, its bars counted from the seed's first note as improv counted them.
    in_time = config.time.in_time()
    downbeat_s = min((e.time_s for e in player if e.is_on), default=0.0)
    write_tracks(args.out, [("player", player), ("improv", continuation)], bpm=config.time.bpm if in_time else None,
                 meter=config.time.meter if in_time else None, downbeat_s=downbeat_s)
    stats = note_stats(continuation)
    print(f"wrote {args.out}: seed {sum(e.is_on for e in player)} notes (median pitch "
          f"{note_stats(player).get('median_pitch')}), continuation {stats['notes']} notes")
    if stats["notes"]:
        print(f"continuation: pitches {stats['lowest']}..{stats['highest']} (median {stats['median_pitch']}, "
              f"{stats['distinct_pitches']} distinct), {stats['onsets_per_s']} onsets/s with "
              f"{stats['distinct_onset_intervals']} distinct intervals, longest silence {stats['longest_silence_s']} s, "
              f"longest one-pitch run {stats['longest_one_pitch_run']}")
    return 0


def cmd_eval(args) -> int:
    from improv import config as config_module
    from improv.evaluate import evaluate, evaluate_adapted, markov_path_for, model_logits
    from improv.markov import MarkovModel
    from improv.midi.files import MIDI_SUFFIXES, encode_file
    from improv.errors import MidiFileError

    import numpy as np

    root = Path(args.dir)
    if not root.is_dir():
        raise ImprovError(f"{root} is not a folder; give a folder that holds .mid or .midi files")
    model = _model(args.model)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES and p.is_file())
    sequences, skipped = [], {}
    for path in files:
        try:
            sequences.append(np.array(encode_file(model.vocab, path), dtype=np.int64))
        except MidiFileError as err:
            skipped[str(path)] = str(err)
    if not sequences:
        raise ImprovError(f"{root} holds no readable MIDI file with notes ({len(files)} found, {len(skipped)} unreadable)")
    markov_path = markov_path_for(model.path)
    markov = MarkovModel.load(markov_path) if markov_path.exists() else None
    logits = [model_logits(model, tokens) for tokens in sequences]  # one pass for both scores
    result = evaluate(model, sequences, markov, logits)
    result["skipped_files"] = len(skipped)
    result["model"] = str(model.path)
    if args.adapt:
        attachment = args.attachment
        if attachment is None:
            attachment = config_module.discover(None)[0].memory.attachment
        config_module.override(config_module.Config(), "memory.attachment", attachment)  # checks the range
        result["adapt"] = {"files": len(sequences), **evaluate_adapted(model, sequences, attachment, logits)}
    if args.json:
        print(json.dumps(result))
    else:
        markov_text = (f"{result['markov_bits_per_token']:.3f}" if markov is not None
                       else f"n/a (no {markov_path.name} beside the model)")
        print(f"files {result['files']} (skipped {len(skipped)}), tokens {result['tokens']}\n"
              f"model bits/token  {result['model_bits_per_token']:.3f}\n"
              f"Markov bits/token {markov_text}\n"
              f"next-pitch accuracy {result['next_pitch_accuracy'] or 0:.1%}")
        if args.adapt:
            adapt = result["adapt"]
            print(f"second halves, first halves heard (attachment {adapt['attachment']}): "
                  f"{adapt['adapted_tokens']} tokens, {adapt['adapted_notes']} notes\n"
                  f"  model alone        {adapt['model_bits_per_token']:.3f} bits/token, "
                  f"{adapt['model_bits_per_note']:.2f} bits/note\n"
                  f"  with session memory {adapt['adapted_bits_per_token']:.3f} bits/token, "
                  f"{adapt['adapted_bits_per_note']:.2f} bits/note")
    for path, reason in skipped.items():
        print(f"skipped: {reason}", file=sys.stderr)
    return 0


def _setup_logging(verbose: bool) -> None:
    import logging

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="improv: %(message)s")


def cmd_run(args) -> int:
    from improv import config as config_module
    import logging

    from improv.daemon import Daemon
    from improv.memory import ContextClasses, load_or_empty
    from improv.model import open_stepped
    from improv.midi.backend import Backend, choose_backend
    from improv.midi.recording import prepare_folder
    from improv.status import StatusLine

    _setup_logging(args.verbose)
    config, config_path = config_module.discover(args.config)
    apply_setting_flags(config, args)
    if args.no_record:
        config.recording.enabled = False
    if config.recording.enabled:  # a folder that cannot be written stops the start before any port is tried
        config.recording.folder = str(prepare_folder(config.recording.folder))
    model_path = config.model.path
    if config.model.folder is not None:
        from improv.daemon import model_files

        files = model_files(config.model.folder)
        if not files:
            raise ImprovError(f"model.folder {config.model.folder} holds no .onnx model; give a folder of exported "
                              f"models (improv models lists what a folder holds)")
        model_path = model_path or files[0]  # program 0 unless --model names one
    model = open_stepped(model_path, lambda: config.model.style_strength)
    from improv.engine import chosen_style

    chosen_style(config, model.vocab)  # a style the model does not have stops the start before any port
    memory = None
    if args.memory is not None:
        memory = load_or_empty(args.memory, model.vocab.to_json(), model.vocab.size, config.memory.max_contexts,
                               logging.getLogger("improv").error, ContextClasses.for_vocab(model.vocab))
    backend = Backend(choose_backend(config.midi.backend))
    daemon = Daemon(config, model, backend, config_source=str(config_path) if config_path else "built-in defaults",
                    memory=memory)
    status = StatusLine(daemon.status_line, enabled=not args.verbose)
    try:
        return daemon.run(status.update)
    finally:
        status.clear()


def cmd_models(args) -> int:
    from improv import config as config_module
    from improv.daemon import model_files
    from improv.model import default_model_path

    config, _ = config_module.discover(args.config)
    apply_setting_flags(config, args)
    if args.dir is not None:
        config.model.folder = args.dir
    folder = Path(config.model.folder).expanduser() if config.model.folder else default_model_path().parent
    if not folder.is_dir():
        raise ImprovError(f"{folder} is not a folder; give --models DIR, a folder of exported .onnx models")
    files = model_files(folder)
    if not files:
        raise ImprovError(f"{folder} holds no .onnx model")
    print(f"models in {folder}: improv run --models {folder} plays program 0 first; a Program Change N from you "
          f"switches to program N (many keyboards number programs from 1: they show N + 1)")
    from improv.model import model_styles

    for program, path in enumerate(files):
        styles = model_styles(path)
        print(f"  program {program:3d}  {path.name}  ({path.stat().st_size / 1e6:.1f} MB)  "
              + (f"styles: {', '.join(styles)}" if styles else "no styles"))
    return 0


def cmd_learn(args) -> int:
    from improv import config as config_module
    from improv.learn import learn, learn_file
    from improv.midi.backend import Backend, choose_backend

    path = learn_file(args.config)
    config = config_module.load(path if path.is_file() else None)
    apply_setting_flags(config, args)
    backend = Backend(choose_backend(config.midi.backend))
    cc = learn(args.setting, path, backend, config.midi.client_name, config.midi.input, args.timeout,
               announce=lambda text: print(f"improv learn {args.setting}: {text}", flush=True))
    print(f"CC {cc} now controls {args.setting}: written to {path}")
    return 0


def jack_period_frames(text: str) -> int:
    """argparse type: frames per JACK period, a power of two JACK accepts."""
    try:
        frames = int(text)
    except ValueError:
        frames = 0
    if frames < 16 or frames > 4096 or frames & (frames - 1):
        raise argparse.ArgumentTypeError(f"{text!r} is not a JACK period: give a power of two from 16 to 4096 frames")
    return frames


def jack_periods(text: str) -> list[int]:
    """argparse type: JACK periods in frames separated by commas."""
    return [jack_period_frames(frames) for frames in text.split(",")]


def cmd_bench(args) -> int:
    from improv.tools import bench

    return bench.main(args)


def cmd_ports(args) -> int:
    from improv.midi.backend import choose_backend, list_ports

    backend = choose_backend(args.backend)
    inputs, outputs = list_ports(backend)
    print(f"backend: {backend}")
    print("inputs (for --in):" + "".join(f"\n  {name}" for name in inputs) if inputs else "inputs: none")
    print("outputs (for --out):" + "".join(f"\n  {name}" for name in outputs) if outputs else "outputs: none")
    return 0


def cmd_play(args) -> int:
    """Play a file as a player would: at its end every key comes up (note-offs, pedal up), but no
    all-notes-off, which `improv run` takes as a panic that cancels its answer. Ctrl-C or SIGTERM
    is a panic: everything is released."""
    import signal
    import time

    from improv.daemon import OUTPUT_DRAIN_S
    from improv.midi.backend import choose_backend, open_output
    from improv.midi.files import read_messages
    from improv.midi.guard import OutputGuard
    from improv.midi.messages import CC_SUSTAIN, PANIC_CONTROLS, SUSTAIN_DOWN_MIN, control_bytes
    from improv.midi.ports import PORT_SETTLE_S

    messages = read_messages(args.file)
    backend = choose_backend(args.backend)
    port = open_output(backend, "improv-play", args.out)
    guard = OutputGuard(port, 0)
    time.sleep(PORT_SETTLE_S)  # a new connection carries messages only from the next cycles on
    stop = []
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    pedal_down: set[int] = set()  # channels whose sustain pedal the file left down
    started = time.monotonic()
    try:
        for time_s, msg in messages:
            delay = started + time_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if stop:
                break
            if msg.type == "control_change" and msg.control in PANIC_CONTROLS:
                guard.release_notes()  # a sequencer's closing all-notes-off, played as keys coming up
                continue
            if msg.type == "control_change" and msg.control == CC_SUSTAIN:
                (pedal_down.add if msg.value >= SUSTAIN_DOWN_MIN else pedal_down.discard)(msg.channel)
            guard.send(msg.bytes())
    except KeyboardInterrupt:
        stop.append(True)
    finally:
        if stop:
            guard.release_all()
        else:
            guard.release_notes()
            for channel in sorted(pedal_down):
                guard.send(control_bytes(channel, CC_SUSTAIN, 0))
        time.sleep(OUTPUT_DRAIN_S)
        port.close()
        signal.signal(signal.SIGTERM, previous)
    return 0


def cmd_plot(args) -> int:
    from improv.plot import plot_file

    print(f"wrote {plot_file(args.file, args.out)}")
    return 0


def cmd_render(args) -> int:
    from improv.render import render_file

    print(f"wrote {render_file(args.file, args.out, args.soundfont)}")
    return 0


SETTING_DEST = "setting:"  # argparse dest prefix of a flag that overrides the config key after it


def setting_flag(parser: argparse.ArgumentParser, flag: str, dotted: str, what: str, show_default: bool = True) -> None:
    """A flag that overrides config key `dotted`: its type, choices, range and default come from the
    config field, so the help and the checks say what config.yaml says."""
    from improv.config import Config, setting_fields

    item, rule = setting_fields()[dotted], rules(dotted)
    section, key = dotted.split(".")
    default = getattr(getattr(Config(), section), key)
    kind = {"int": int, "float": float}.get(str(item.type).split(" ")[0], str)
    several = "list[str]" in str(item.type)  # given again for each (--in A --in B)
    allowed = (f", > {rule['above']}" if "above" in rule else
               f", {rule['low']}..{rule['high']}" if "low" in rule and not isinstance(rule["low"], str) else "")
    shown = f" (default: {default})" if show_default else ""
    metavar = None if "choices" in rule else flag.lstrip("-").upper().replace("-", "_")
    parser.add_argument(flag, dest=SETTING_DEST + dotted, type=kind, choices=rule.get("choices"), metavar=metavar,
                        action="append" if several else "store", help=f"{what}{'' if 'choices' in rule else allowed}{shown}")


def key_flags(parser: argparse.ArgumentParser) -> None:
    """--key and --key-strength, as improv run and improv generate both take them."""
    setting_flag(parser, "--key", "key.name", "the key improv plays in: C:major, A:minor, D:dorian, F#:blues, ... "
                                              "custom:0,2,4,7,9 (pitch classes), auto (yours, as heard) or none")
    setting_flag(parser, "--key-strength", "key.strength", "1 plays only notes in the key; lower damps the others; "
                                                           "0 changes nothing")


def style_flag(parser: argparse.ArgumentParser) -> None:
    setting_flag(parser, "--style", "model.style", "a style of the model, fed after START (improv models lists "
                                                   "each model's styles); none: no style", show_default=False)
    setting_flag(parser, "--style-strength", "model.style_strength", "how strongly the style steers: 1 the model as "
                                                                     "trained, 0 ignores the style, more steers further")


def time_flags(parser: argparse.ArgumentParser) -> None:
    """The tempo, the grid and bars, as improv run and improv generate both take them."""
    setting_flag(parser, "--bpm", "time.bpm", "the tempo improv keeps when it does not follow a clock")
    setting_flag(parser, "--grid", "time.grid", "pull improv's onsets toward this grid (needs a tempo)")
    setting_flag(parser, "--swing", "time.swing", "every second grid line this share of a grid step later")
    setting_flag(parser, "--grid-strength", "time.grid_strength", "0 leaves onsets free, 1 puts them on the grid")
    setting_flag(parser, "--meter", "time.meter", "time signature, e.g. 4/4, 3/4, 6/8")
    setting_flag(parser, "--response-bars", "time.response_bars", "answers last this many whole bars "
                                                                   "(default: engine.response_ms)", show_default=False)
    setting_flag(parser, "--start-on", "time.start_on", "an answer starts right after the silence, or on the next "
                                                        "beat or bar")


def apply_setting_flags(config, args) -> None:
    """Override the config with each setting flag given, checked as the file is."""
    from improv import config as config_module

    for dest, value in vars(args).items():
        if dest.startswith(SETTING_DEST) and value is not None:
            if isinstance(value, list) and len(value) == 1:
                value = value[0]  # one port, as config.yaml would name it
            config_module.override(config, dest.removeprefix(SETTING_DEST), value)


def build_parser() -> argparse.ArgumentParser:
    from improv.config import Config
    from improv.paths import user_config_dir

    defaults = Config()
    backends = rules("midi.backend")["choices"]

    config_help = (f"settings file (default: ./config.yaml, else {user_config_dir() / 'config.yaml'}, "
                   f"else built-in defaults)")
    model_help = "an exported .onnx model file (default: the shipped int8 model)"
    parser = argparse.ArgumentParser(prog="improv", description="A real-time LSTM improviser for MIDI players.")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, summary: str, description: str = ""):
        return commands.add_parser(name, help=summary, description=description or summary[0].upper() + summary[1:] + ".")

    tokens = command("tokens", "show the tokens a MIDI file becomes",
                     "Show the tokens a MIDI file becomes: how the model hears it. NOTE_ON_p and NOTE_OFF_p are "
                     "MIDI pitch p; TIME_SHIFT_n waits n time steps of the model (10 ms each for the shipped "
                     "model, so TIME_SHIFT_31 is 310 ms); VELOCITY_b sets the velocity bin for the notes after it.")
    tokens.add_argument("file", help="a MIDI file (.mid)")
    tokens.add_argument("--model", help=model_help)
    tokens.add_argument("--ids", action="store_true", help="print integer token ids instead of names")
    tokens.set_defaults(run=cmd_tokens)

    generate = command("generate", "continue a MIDI file offline",
                       "Continue a MIDI file offline, with the daemon's engine on a virtual clock. The output has "
                       "the seed and the continuation on two tracks.")
    generate.add_argument("--seed", required=True, help="MIDI file played to the model first, as the player")
    generate.add_argument("--out", required=True, help="MIDI file to write: seed and continuation on two tracks")
    generate.add_argument("--seconds", type=float, default=10.0, help="length of the continuation (default: 10)")
    setting_flag(generate, "--temperature", "sampling.temperature", "sampling temperature: lower is safer")
    setting_flag(generate, "--top-p", "sampling.top_p", "sample from the likeliest tokens covering this probability")
    setting_flag(generate, "--silence-ms", "engine.silence_ms", "pause after the seed before the answer")
    setting_flag(generate, "--attachment", "memory.attachment", "how much the continuation follows the seed, "
                                                                "learned as the player's: 0 the model alone")
    key_flags(generate)
    style_flag(generate)
    time_flags(generate)
    generate.add_argument("--model", help=model_help)
    generate.add_argument("--config", help=config_help)
    generate.add_argument("--random-seed", type=int,
                          help="a whole number makes the continuation repeatable (default: sampling.seed, "
                               "else different every run)")
    generate.set_defaults(run=cmd_generate)

    evaluate = command("eval", "bits per token of the model and its Markov baseline on MIDI files")
    evaluate.add_argument("dir", help="a folder; every .mid/.midi file under it is scored")
    evaluate.add_argument("--model", help=model_help)
    evaluate.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    evaluate.add_argument("--adapt", action="store_true",
                          help="also score each file's second half with the session memory learning as it "
                               "goes, each token scored before it is learned (JSON key 'adapt')")
    evaluate.add_argument("--attachment", type=float,
                          help=f"with --adapt: how much the memory may lead, 0..1 "
                               f"(default: memory.attachment, {defaults.memory.attachment})")
    evaluate.set_defaults(run=cmd_eval)

    run = command("run", "listen on a MIDI input and answer on a MIDI output",
                  "The daemon: listen on a MIDI input and answer on a MIDI output, until Ctrl-C. Flags override "
                  "the config file; every setting is described in config.yaml.")
    run.add_argument("--config", help=config_help)
    setting_flag(run, "--model", "model.path", model_help, show_default=False)
    setting_flag(run, "--in", "midi.input", "connect to this input port, again for several (name or unique part; "
                                            "see improv ports) "
                                            "(default: open improv's own input)", show_default=False)
    setting_flag(run, "--out", "midi.output", "connect to this output port (default: open improv's own output)",
                 show_default=False)
    setting_flag(run, "--mode", "engine.mode", "call-response answers when you stop; continuous plays along")
    setting_flag(run, "--silence-ms", "engine.silence_ms", "call-response: answer after this much silence with all "
                                                           "keys up")
    setting_flag(run, "--temperature", "sampling.temperature", "sampling temperature: lower is safer, higher wilder")
    setting_flag(run, "--response-ms", "engine.response_ms", "longest answer (call-response), play-on time after "
                                                             "you stop (continuous)")
    setting_flag(run, "--channel", "midi.output_channel", "output channel")
    setting_flag(run, "--backend", "midi.backend", "MIDI system; auto prefers JACK when a server runs")
    setting_flag(run, "--attachment", "memory.attachment", "how much improv follows what you played: 0 the model "
                                                           "alone, 1 as much of you as the session memory can give")
    key_flags(run)
    style_flag(run)
    setting_flag(run, "--sync", "time.sync", "whose tempo improv follows: its own (--bpm), the MIDI clock on its "
                                             "input, or an Ableton Link session")
    setting_flag(run, "--clock-in", "time.clock_input", "with --sync midi-clock: take the clock from this port "
                                                        "(default: improv's input)", show_default=False)
    time_flags(run)
    setting_flag(run, "--models", "model.folder", "a folder of models: a Program Change N switches to the Nth "
                                                  "(improv models lists them)", show_default=False)
    setting_flag(run, "--output-offset-ms", "midi.output_offset_ms", "send improv's notes this much later "
                                                                     "(negative: earlier) than their time")
    run.add_argument("--memory", metavar="FILE",
                     help="start from a saved session memory (NAME.memory.npz beside a recording; default: empty)")
    run.add_argument("--no-record", action="store_true", help="do not record the session (default: record)")
    run.add_argument("--verbose", action="store_true", help="log every event instead of a status line")
    run.set_defaults(run=cmd_run)

    models = command("models", "list the models a Program Change can pick, with their program numbers")
    models.add_argument("dir", nargs="?", help="a folder of exported .onnx models (default: --models, else "
                                               "model.folder, else the shipped models' folder)")
    models.add_argument("--config", help=config_help)
    setting_flag(models, "--models", "model.folder", "a folder of exported .onnx models (default: model.folder, "
                                                     "else the shipped models' folder)", show_default=False)
    models.set_defaults(run=cmd_models)

    learn = command("learn", "map the next CC you move to a setting, in the config file",
                    "MIDI learn: wait for the next control change on improv's input (opened as improv run opens "
                    "it) and map that CC to SETTING in the config file, keeping its comments. A CC another "
                    "control already has is refused, naming both.")
    learn.add_argument("setting", help="a control: temperature, top_p, mode, enabled, response_ms, pitch_low, "
                                       "pitch_high, max_polyphony, max_note_ms, velocity_scale, attachment, "
                                       "key_strength, reset, answer (or a dotted setting such as key.strength)")
    learn.add_argument("--config", help="the config file to write (default: the one improv run reads, else "
                                        "./config.yaml)")
    setting_flag(learn, "--in", "midi.input", "listen on this input port (default: open improv's own input)",
                 show_default=False)
    setting_flag(learn, "--backend", "midi.backend", "MIDI system; auto prefers JACK when a server runs")
    learn.add_argument("--timeout", type=float, help="give up after this many seconds (default: wait)")
    learn.set_defaults(run=cmd_learn)

    ports = command("ports", "list the MIDI inputs and outputs improv can see")
    ports.add_argument("--backend", default="auto", choices=backends, help="MIDI system (default: auto)")
    ports.set_defaults(run=cmd_ports)

    bench = command("bench", "measure step, sampling, bandwidth and real-port reaction times")
    bench.add_argument("--model", help=model_help)
    bench.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    bench.add_argument("--seconds", type=float, default=5.0, help="scale of the in-process measurements (default: 5)")
    bench.add_argument("--phrases", type=int, default=50, help="phrases played through JACK per mode (default: 50)")
    bench.add_argument("--start-jack", action="store_true", help="start a private JACK server if none runs")
    bench.add_argument("--backend", default="jack", choices=["jack", "jack-rtmidi"],
                       help="improv's JACK client: its own (native) or python-rtmidi's (default: jack)")
    bench.add_argument("--jack-period", type=jack_period_frames, default=64, metavar="FRAMES",
                       help="the period of the JACK server --start-jack starts (default 64 frames at 48 kHz; "
                            "a server already running is measured as it is)")
    bench.add_argument("--idle-periods", type=jack_periods, metavar="FRAMES,...",
                       help="instead: idle CPU of improv run and of a bare client on private JACK servers at "
                            "these periods (e.g. 64,128,256,1024)")
    bench.set_defaults(run=cmd_bench)

    play = command("play", "play a MIDI file to a port in real time",
                   "Play a MIDI file to a port in real time, as a player would: at the end every key and the "
                   "pedal come up. Ctrl-C stops it and releases everything.")
    play.add_argument("file", help="a MIDI file (.mid)")
    play.add_argument("--out", required=True, help="output port name or unique part (see improv ports), e.g. improv:in")
    play.add_argument("--backend", default="auto", choices=backends, help="MIDI system (default: auto)")
    play.set_defaults(run=cmd_play)

    plot = command("plot", "draw a MIDI file as a piano roll (PNG)",
                   "Draw a MIDI file as a piano roll: a session recording's or improv generate's player and "
                   "improv tracks in two colours (other files: a colour per track or channel), velocity as "
                   "shade, bar lines when the file sets a tempo. Needs matplotlib: pip install 'improv[plot]'.")
    plot.add_argument("file", help="a MIDI file (.mid)")
    plot.add_argument("--out", required=True, help="image to write, e.g. roll.png (the suffix picks the format)")
    plot.set_defaults(run=cmd_plot)

    render = command("render", "render a MIDI file to a WAV with FluidSynth",
                     "Render a MIDI file to a WAV file (44.1 kHz) with the fluidsynth program and a General "
                     "MIDI soundfont (apt-get install fluidsynth fluid-soundfont-gm, or brew install fluid-synth).")
    render.add_argument("file", help="a MIDI file (.mid)")
    render.add_argument("--out", required=True, help="WAV file to write, e.g. take.wav")
    render.add_argument("--soundfont", help="a .sf2 soundfont (default: the first found in "
                                            "/usr/share/sounds/sf2, /usr/share/soundfonts, /usr/local/share/soundfonts)")
    render.set_defaults(run=cmd_render)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ImprovError as err:
        print(f"improv: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
