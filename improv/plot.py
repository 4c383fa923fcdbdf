"""`improv plot`: a piano roll of a MIDI file as a PNG, to see what the player and improv played.

matplotlib is an optional extra (`pip install 'improv[plot]'`): the daemon never needs it, so it is
imported only here, inside the functions, and drawn on the Agg canvas (no display, no global pyplot state).
"""

from __future__ import annotations

import itertools
import os
from collections import defaultdict, deque
from pathlib import Path

import mido

from improv.errors import ImprovError
from improv.midi.files import check_output_path, read_messages

# The two tracks of a session recording or an `improv generate` output get fixed colours, so every
# roll reads the same way; other files get matplotlib's default cycle, one colour per track or channel.
TRACK_COLOURS = {"player": "#1f77b4", "improv": "#d62728"}  # blue, red
FIGSIZE, DPI = (12, 5), 100
BEATS_PER_BAR = 4  # time signatures are not read: a bar line every 4 beats
NOTE_NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]


def note_name(pitch: int) -> str:
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"  # MIDI 60 is C4


def velocity_alpha(velocity: int) -> float:
    """Velocity as shade; the softest note stays visible."""
    return 0.25 + 0.75 * min(velocity, 127) / 127


def _seconds_of(midi: mido.MidiFile):
    """Ticks to seconds through the tempo map. Type-1 files keep tempo changes on any track (usually
    the first) and they apply to all, so the changes of every track are merged."""
    changes = sorted((tick, msg.tempo) for track in midi.tracks for tick, msg in _timed(track)
                     if msg.type == "set_tempo")

    def seconds(tick: int) -> float:
        total, last, tempo = 0.0, 0, 500_000  # 120 bpm until a set_tempo says otherwise (the MIDI default)
        for at, new in changes:
            if at >= tick:
                break
            total += mido.tick2second(at - last, midi.ticks_per_beat, tempo)
            last, tempo = at, new
        return total + mido.tick2second(tick - last, midi.ticks_per_beat, tempo)

    return seconds, [tempo for _, tempo in changes]


def _timed(track):
    tick = 0
    for msg in track:
        tick += msg.time
        yield tick, msg


def read_rolls(path: str | os.PathLike):
    """The notes by group, as (start_s, end_s, pitch, velocity); the file's tempos (µs a beat); the times
    of its bar lines (none without a tempo); its length in seconds. A group is a track when notes are on
    more than one track or the file is improv's (tracks "player" and "improv"), else a channel."""
    midi = mido.MidiFile(path, clip=True)
    seconds, tempos = _seconds_of(midi)
    end_tick = max((tick for track in midi.tracks for tick, _ in _timed(track)), default=0)
    notes = defaultdict(list)  # (track index, track name, channel) -> notes
    for index, track in enumerate(midi.tracks):
        name = track.name or f"track {index + 1}"
        sounding = defaultdict(deque)  # (channel, pitch) -> start ticks and velocities, first on first off
        for tick, msg in _timed(track):
            if msg.type == "note_on" and msg.velocity > 0:
                sounding[msg.channel, msg.note].append((tick, msg.velocity))
            elif msg.type in ("note_on", "note_off") and sounding[msg.channel, msg.note]:
                start, velocity = sounding[msg.channel, msg.note].popleft()
                notes[index, name, msg.channel].append((seconds(start), seconds(tick), msg.note, velocity))
        for (channel, pitch), starts in sounding.items():  # a note never released lasts to the end
            notes[index, name, channel] += [(seconds(s), seconds(end_tick), pitch, v) for s, v in starts]
    by_track = len({i for i, _, _ in notes}) > 1 or any(name in TRACK_COLOURS for _, name, _ in notes)
    groups = defaultdict(list)
    for (index, name, channel), found in sorted(notes.items()):
        groups[name if by_track else f"channel {channel + 1}"] += found
    bar_ticks = range(0, end_tick + 1, BEATS_PER_BAR * midi.ticks_per_beat) if tempos else ()
    return dict(groups), tempos, [seconds(t) for t in bar_ticks], seconds(end_tick)


def draw(path: str | os.PathLike):
    """The piano roll of `path` as a matplotlib Figure (not saved)."""
    read_messages(path)  # first, the one-line errors for a file that is not MIDI or has no pitched notes
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.colors import to_rgba
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImprovError("improv plot needs matplotlib: pip install 'improv[plot]'") from err
    groups, tempos, bars, end_s = read_rolls(path)
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cycle = (f"C{i}" for i in itertools.count())  # matplotlib's colour cycle, "C0", "C1", ...
    for label, notes in groups.items():
        base = TRACK_COLOURS.get(label) or next(cycle)
        ax.barh([p for _, _, p, _ in notes], [e - s for s, e, _, _ in notes], left=[s for s, _, _, _ in notes],
                height=0.8, edgecolor="white", linewidth=0.3,  # a thin gap between repeated notes
                color=[to_rgba(base, velocity_alpha(v)) for _, _, _, v in notes],
                label=f"{label} ({len(notes)} note{'s' * (len(notes) != 1)})")
    pitches = [p for notes in groups.values() for _, _, p, _ in notes]
    low, high = min(pitches) - 2, max(pitches) + 2
    ax.set_ylim(low, high)
    ticks = [p for p in range(low, high + 1) if p % 12 == 0] or list(range(low, high + 1))  # C's; all in a narrow roll
    ax.set_yticks(ticks, [note_name(p) for p in ticks])
    ax.set_axisbelow(True)  # grid lines under the notes, not through them
    ax.grid(axis="y", color="0.85", linewidth=0.6)
    ax.set_xlim(0, end_s)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("pitch")
    title = Path(path).name
    if tempos:  # without a set_tempo the file's bars are unknown: no bar lines rather than made-up ones
        ax.vlines(bars, low, high, colors="0.6", linewidth=0.5, zorder=0)
        bpms = sorted({round(mido.tempo2bpm(t), 1) for t in tempos})
        tempo = f"{bpms[0]:g} bpm" if len(bpms) == 1 else f"{bpms[0]:g}-{bpms[-1]:g} bpm"
        title += f": {tempo}, a bar line every {BEATS_PER_BAR} beats"
    else:
        title += ": no tempo in the file, no bar lines"
    ax.set_title(title + "  (shade: velocity)")
    legend = ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1), fontsize="small")  # beside, over no note
    for handle in legend.legend_handles:
        handle.set_alpha(1)  # the legend shows the track's colour, not one note's shade
    fig.tight_layout()
    return fig


def plot_file(path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Draw the piano roll of `path` into `out` (PNG, or any format matplotlib knows by the suffix)."""
    out = check_output_path(out)  # before the work: a missing folder is one line, not a traceback
    fig = draw(path)
    try:
        fig.savefig(out)
    except (ValueError, OSError) as err:  # an unknown suffix, a disk that is full
        raise ImprovError(f"cannot write {out}: {err}") from err
    return out
