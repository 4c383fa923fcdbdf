"""`improv render`: a MIDI file to a WAV through FluidSynth and a General MIDI soundfont, to hear a
take without a synth on a port.

The fluidsynth program is run as a subprocess (no Python binding to install); it comes from the
system's packages, like the soundfont (Debian: fluidsynth, fluid-soundfont-gm).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from improv.errors import ImprovError
from improv.midi.files import check_output_path, read_messages

# Where Debian, Fedora/Arch and hand installs put soundfonts; the first that holds one is used.
SOUNDFONT_DIRS = (Path("/usr/share/sounds/sf2"), Path("/usr/share/soundfonts"), Path("/usr/local/share/soundfonts"))
# Debian's default-GM.sf2 is the alternatives link to the GM soundfont the system prefers.
PREFERRED = ("default-GM.sf2", "FluidR3_GM.sf2", "default.sf2")
SAMPLE_RATE = 44100
GAIN = 0.5  # fluidsynth's default, 0.2, peaks near -20 dBFS on a piano take; 0.5 still leaves headroom for chords
INSTALL_HINT = ("install it: apt-get install fluidsynth fluid-soundfont-gm (Debian, Ubuntu), "
                "or brew install fluid-synth (macOS)")


def find_soundfont(folders=SOUNDFONT_DIRS) -> Path:
    """The General MIDI soundfont in the usual places: a preferred name first, else any .sf2/.sf3."""
    for folder in folders:
        candidates = [folder / name for name in PREFERRED] + sorted(folder.glob("*.sf[23]"))
        for candidate in candidates:
            if candidate.is_file():
                return candidate
    raise ImprovError(f"no soundfont (.sf2) in {', '.join(map(str, folders))}: apt-get install fluid-soundfont-gm, "
                      f"or name one with --soundfont FILE.sf2")


def render_file(path: str | os.PathLike, out: str | os.PathLike, soundfont: str | os.PathLike | None = None) -> Path:
    """Render `path` to a WAV file `out` at SAMPLE_RATE; returns `out`. Every failure is an ImprovError
    of one line: the arguments are checked before fluidsynth runs, and its own errors are read back."""
    read_messages(path)  # the one-line errors for a file that is not MIDI or has no pitched notes
    if soundfont is not None and not Path(soundfont).is_file():
        raise ImprovError(f"soundfont {soundfont}: no such file; give a .sf2 file to --soundfont")
    out = check_output_path(out)
    program = shutil.which("fluidsynth")
    if program is None:
        raise ImprovError(f"improv render needs the fluidsynth program, not found on PATH; {INSTALL_HINT}")
    soundfont = Path(soundfont) if soundfont is not None else find_soundfont()
    # Written beside `out` under another name, then renamed: a failed render leaves no silent or half WAV.
    partial = out.with_name(f".{out.name}.partial.wav")
    command = [program, "-n", "-i", "-q", "-F", str(partial), "-T", "wav", "-r", str(SAMPLE_RATE), "-g", str(GAIN),
               str(soundfont), str(path)]
    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace")
        # fluidsynth exits 0 even when it could not load the soundfont (it then renders silence), so
        # its error lines count as a failure too.
        failed = any(line.startswith("fluidsynth: error") for line in done.stderr.splitlines())
        if done.returncode != 0 or failed or not partial.is_file():
            lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
            raise ImprovError(f"fluidsynth could not render {path}: {lines[-1].strip()}")
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out
