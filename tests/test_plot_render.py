"""`improv plot` (a piano roll PNG) and `improv render` (a WAV through FluidSynth), run as a user runs
them: on a file `improv generate` wrote, or on small files written here. The render tests skip without
fluidsynth or a soundfont, unless IMPROV_REQUIRE_RENDER=1 (CI), where that is a failure."""

import os
import shutil
import subprocess
import sys
import wave

import mido
import numpy as np
import pytest

from conftest import CHORALE, ROOT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def improv(*args, env=None, python=sys.executable, code=None):
    head = ["-c", code] if code else ["-m", "improv.cli"]
    return subprocess.run([python, *head, *map(str, args)], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120)


def assert_clean_error(result, *fragments):
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("improv: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def need_matplotlib():
    return pytest.importorskip("matplotlib", reason="improv plot needs matplotlib: pip install 'improv[plot]'")


def need_renderer():
    """Skip (or, with IMPROV_REQUIRE_RENDER=1, fail) without fluidsynth and a General MIDI soundfont."""
    from improv.errors import ImprovError
    from improv.render import find_soundfont

    missing = None
    if shutil.which("fluidsynth") is None:
        missing = "fluidsynth is not installed (apt-get install fluidsynth)"
    else:
        try:
            find_soundfont()
        except ImprovError:
            missing = "no General MIDI soundfont is installed (apt-get install fluid-soundfont-gm)"
    if missing and os.environ.get("IMPROV_REQUIRE_RENDER") == "1":
        pytest.fail(f"{missing}, and IMPROV_REQUIRE_RENDER=1")
    if missing:
        pytest.skip(missing)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """A real `improv generate` output: the chorale as "player", the model's continuation as "improv"."""
    out = tmp_path_factory.mktemp("generated") / "generated.mid"
    result = improv("generate", "--seed", CHORALE, "--out", out, "--seconds", 4, "--random-seed", 0)
    assert result.returncode == 0, result.stderr
    return out


def write_file(path, tracks, tempo_bpm=None):
    """A type-1 file of named tracks, each [(start_beat, beats, pitch, velocity, channel)], 480 ticks a beat."""
    midi = mido.MidiFile(type=1, ticks_per_beat=480)
    for index, (name, notes) in enumerate(tracks):
        events = [(0, mido.MetaMessage("track_name", name=name))] if name else []
        if index == 0 and tempo_bpm:
            events.append((0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo_bpm))))
        for start, beats, pitch, velocity, channel in notes:
            events.append((int(start * 480), mido.Message("note_on", note=pitch, velocity=velocity, channel=channel)))
            events.append((int((start + beats) * 480), mido.Message("note_off", note=pitch, channel=channel)))
        events.sort(key=lambda e: e[0])
        track, now = mido.MidiTrack(), 0
        for tick, msg in events:
            track.append(msg.copy(time=tick - now))
            now = tick
        midi.tracks.append(track)
    midi.save(path)
    return path


def pixels_of(image, colour) -> int:
    """How many pixels show `colour` at some shade, that is blended over white at an alpha of 0.2..1:
    white minus the pixel is a multiple (the alpha) of white minus the colour."""
    from matplotlib.colors import to_rgb

    ink = 1 - np.asarray(to_rgb(colour))
    seen = 1 - image[..., :3].reshape(-1, 3)
    alpha = seen @ ink / (ink @ ink)
    close = np.abs(seen - alpha[:, None] * ink).max(axis=1) < 0.03
    return int(np.count_nonzero(close & (alpha > 0.2) & (alpha < 1.02)))


def test_plot_draws_player_and_improv_in_two_colours(generated, tmp_path):
    matplotlib = need_matplotlib()
    from matplotlib.image import imread

    from improv.plot import TRACK_COLOURS

    out = tmp_path / "roll.png"
    result = improv("plot", generated, "--out", out)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == PNG_MAGIC
    image = imread(out)
    assert image.shape[:2] == (500, 1200)  # 12 x 5 inches at 100 dpi
    # The continuation starts after the 22 s seed, so the left half of the roll is the player's alone:
    # there the player's colour and not improv's. In the whole image, improv's notes cover more than
    # its legend swatch (~200 pixels) could.
    player, improv_ = TRACK_COLOURS["player"], TRACK_COLOURS["improv"]
    left = image[:, : image.shape[1] // 2]
    assert pixels_of(left, player) > 5000 and pixels_of(left, improv_) < 50, matplotlib.__version__
    assert pixels_of(image, improv_) > 1000


def test_plot_shows_tempo_bars_legend_and_velocity(tmp_path):
    need_matplotlib()
    from improv.plot import draw

    notes = [(0, 1, 60, 120, 0), (1, 1, 64, 30, 0), (6, 2, 72, 90, 0)]
    path = write_file(tmp_path / "take.mid", [("player", notes), ("improv", [(8, 1, 67, 64, 1)])], tempo_bpm=90)
    ax = draw(path).axes[0]
    assert ax.get_title().startswith("take.mid: 90 bpm")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["player (3 notes)", "improv (1 note)"]
    # 9 beats at 90 bpm: bar lines at beats 0, 4 and 8 (0, 2.67 and 5.33 s).
    (bars,) = [c for c in ax.collections if len(c.get_segments()) > 0]
    assert [round(s[0][0], 2) for s in bars.get_segments()] == [0, 2.67, 5.33]
    loud, soft = ax.containers[0].patches[:2]
    assert soft.get_facecolor()[3] < loud.get_facecolor()[3]  # velocity 30 is drawn lighter than 120
    assert ax.get_xlim()[1] == pytest.approx(9 * 60 / 90)
    assert "C4" in [t.get_text() for t in ax.get_yticklabels()]


def test_plot_of_another_file_has_a_colour_per_channel_and_no_bars_without_tempo(tmp_path):
    need_matplotlib()
    from improv.plot import draw

    path = write_file(tmp_path / "duet.mid", [("", [(0, 1, 60, 100, 0), (0, 1, 48, 100, 1), (1, 1, 50, 100, 1)])])
    ax = draw(path).axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["channel 1 (1 note)", "channel 2 (2 notes)"]
    assert "no tempo" in ax.get_title() and not ax.collections
    colours = {tuple(c.patches[0].get_facecolor()[:3]) for c in ax.containers}
    assert len(colours) == 2


def test_plot_without_matplotlib_says_how_to_install_it(generated, tmp_path):
    hide = "import sys; sys.modules['matplotlib'] = None; from improv.cli import main; sys.exit(main(sys.argv[1:]))"
    result = improv("plot", generated, "--out", tmp_path / "roll.png", code=hide)
    assert_clean_error(result, "improv plot needs matplotlib: pip install 'improv[plot]'")
    assert not (tmp_path / "roll.png").exists()


@pytest.mark.parametrize("command, out", [("plot", "roll.png"), ("render", "take.wav")])
def test_bad_input_is_one_line(command, out, tmp_path):
    (tmp_path / "notes.mid").write_text("not midi")
    assert_clean_error(improv(command, tmp_path / "notes.mid", "--out", tmp_path / out), "not a readable MIDI file")
    empty = write_file(tmp_path / "empty.mid", [("player", [])], tempo_bpm=120)
    assert_clean_error(improv(command, empty, "--out", tmp_path / out), "has no notes")
    assert_clean_error(improv(command, CHORALE, "--out", tmp_path / "missing" / out), "does not exist")


def test_render_is_audible_and_as_long_as_the_file(generated, tmp_path):
    need_renderer()
    out = tmp_path / "take.wav"
    result = improv("render", generated, "--out", out)
    assert result.returncode == 0, result.stderr
    with wave.open(str(out)) as audio:
        assert audio.getsampwidth() == 2 and audio.getframerate() == 44100
        seconds = audio.getnframes() / audio.getframerate()
        samples = np.frombuffer(audio.readframes(audio.getnframes()), dtype="<i2").astype(float) / 32768
    length = mido.MidiFile(generated).length
    assert length <= seconds <= length + 4  # FluidSynth lets the last notes ring out (release, reverb)
    rms = np.sqrt(np.mean(samples**2))
    assert rms > 0.01, rms
    assert not list(tmp_path.glob(".*")), "a partial file was left behind"


def test_render_reports_fluidsynth_failure_in_one_line(generated, tmp_path):
    need_renderer()
    (tmp_path / "broken.sf2").write_text("not a soundfont")
    result = improv("render", generated, "--out", tmp_path / "take.wav", "--soundfont", tmp_path / "broken.sf2")
    assert_clean_error(result, "fluidsynth could not render", "not a SoundFont")
    assert list(tmp_path.iterdir()) == [tmp_path / "broken.sf2"]  # no silent WAV, no partial file


def test_render_with_a_missing_soundfont_names_it(generated, tmp_path):
    missing = tmp_path / "nowhere.sf2"
    assert_clean_error(improv("render", generated, "--out", tmp_path / "t.wav", "--soundfont", missing),
                       str(missing), "--soundfont")


def test_render_without_fluidsynth_says_how_to_install_it(generated, tmp_path):
    bin_dir = tmp_path / "bin"  # a PATH with python and nothing else
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    result = improv("render", generated, "--out", tmp_path / "t.wav", python=bin_dir / "python",
                    env={**os.environ, "PATH": str(bin_dir)})
    assert_clean_error(result, "needs the fluidsynth program", "apt-get install fluidsynth fluid-soundfont-gm",
                       "brew install fluid-synth")


def test_soundfont_search_finds_one_or_says_to_name_it(tmp_path):
    from improv.errors import ImprovError
    from improv.render import find_soundfont

    empty, fonts = tmp_path / "empty", tmp_path / "fonts"
    empty.mkdir(), fonts.mkdir()
    with pytest.raises(ImprovError, match="--soundfont"):
        find_soundfont([empty, tmp_path / "missing"])
    (fonts / "Some_GM.sf2").write_bytes(b"")
    assert find_soundfont([empty, fonts]) == fonts / "Some_GM.sf2"
    (fonts / "FluidR3_GM.sf2").write_bytes(b"")
    assert find_soundfont([empty, fonts]) == fonts / "FluidR3_GM.sf2"  # the GM soundfont's known name first
