"""The session recording and improv generate's output in time: the tempo map, the meter and the
session's bar lines in the file (improv.midi.files.TempoMap, TrackRetimer; SessionRecorder.meter and
.tempo; write_tracks' bpm and meter), read back with mido as a DAW would."""

import logging
import random

import mido
import pytest

from improv.events import NoteEvent
from improv.midi.files import TICKS_PER_BEAT, TempoMap, write_tracks
from improv.midi.recording import SessionRecorder

START_S = 100.0  # the daemon's clock at the recording's start


def _file_tick_s(bpm):
    """The length of a tick of the file at `bpm`."""
    return 60.0 / bpm / TICKS_PER_BEAT


def _read(path):
    """(metas, notes): the first track's tempo and time signature events as (tick, message), and each
    note-on as (seconds by mido's playback, tick, track index, note)."""
    midi = mido.MidiFile(path)
    assert midi.ticks_per_beat == TICKS_PER_BEAT
    metas, ticks = [], []
    for index, track in enumerate(midi.tracks):
        tick = 0
        for msg in track:
            tick += msg.time
            if index == 0 and msg.type in ("set_tempo", "time_signature"):
                metas.append((tick, msg))
            if msg.type == "note_on" and msg.velocity:
                ticks.append((tick, index, msg.note))
    seconds, now = [], 0.0
    for msg in midi:  # the tracks merged, msg.time in seconds through the tempo map: what a player hears
        now += msg.time
        if msg.type == "note_on" and msg.velocity:
            seconds.append((now, msg.note))
    assert len(seconds) == len(ticks)
    return metas, ticks, seconds


def _tempos(metas):
    return [(tick, round(mido.tempo2bpm(msg.tempo), 3)) for tick, msg in metas if msg.type == "set_tempo"]


def _meters(metas):
    return [(tick, msg.numerator, msg.denominator) for tick, msg in metas if msg.type == "time_signature"]


def _bar_lines(metas, end_tick):
    """The file's bar lines as a DAW counts them from its time signatures."""
    meters, lines = _meters(metas), []
    for index, (tick, numerator, denominator) in enumerate(meters):
        until = meters[index + 1][0] if index + 1 < len(meters) else end_tick
        while tick < until:
            lines.append(tick)
            tick += TICKS_PER_BEAT * 4 * numerator // denominator
    return lines


def _assert_real_times(seconds, played, tick_s):
    """Each note plays at the time it was recorded (seconds from the recording's start), within a tick
    of the file and 1/1920 s (the recorder's own grid)."""
    got = sorted(seconds)
    want = sorted((time_s - START_S, note) for time_s, note in played)
    assert [note for _, note in got] == [note for _, note in want] or len(got) == len(want)
    worst = max(abs(g - w) for (g, _), (w, _) in zip(got, want))
    assert worst <= tick_s / 2 + 1 / 1920 + 1e-9, f"a note is {worst * 1000:.2f} ms off its time"


class Session:
    """Drives a SessionRecorder as the daemon does: notes and tempo readings in time order, the
    recorder thread's flushes every `flush_every_s` of the session."""

    def __init__(self, tmp_path, flush_every_s=None, meter=None):
        self.recorder = SessionRecorder(tmp_path, flush_s=60, start_s=START_S, output_channel=1)
        if meter is not None:
            self.recorder.meter(*meter)
        self.events, self.flush_every_s = [], flush_every_s
        self.played = []  # (time, note) of every note-on
        self.player = []  # the time of each of the player's

    def note(self, time_s, pitch, who="player", length_s=0.1):
        self.events += [(time_s, 1, who, pitch, 90), (time_s + length_s, 0, who, pitch, 0)]
        self.played.append((time_s, pitch))
        if who == "player":
            self.player.append(time_s)

    def tempo(self, time_s, bpm, beat):
        self.events.append((time_s, 2, "tempo", bpm, beat))

    def record(self):
        last_flush = START_S
        for time_s, _, who, a, b in sorted(self.events, key=lambda e: e[:2]):
            if who == "tempo":
                self.recorder.tempo(time_s, a, b)
            elif who == "player":
                self.recorder.player(time_s, a, b)
            else:
                self.recorder.improv(NoteEvent(0.0, a, b), time_s)
            if self.flush_every_s and time_s - last_flush >= self.flush_every_s:
                self.recorder.flush()
                _read(self.recorder.path)  # a valid file after every rewrite
                last_flush = time_s
        self.recorder.close()
        return _read(self.recorder.path)


@pytest.mark.parametrize("flush_every_s", [None, 1.0])
def test_a_take_at_90_bpm_in_3_4_carries_them_and_its_beats_are_the_files_beats(tmp_path, flush_every_s):
    session = Session(tmp_path, flush_every_s, meter=(3, 4))
    rng = random.Random(0)
    for i in range(3000):  # the daemon reads the tempo every 10 ms or so
        time_s = START_S + 0.001 + i * 0.01
        session.tempo(time_s, 90.0, (time_s - START_S) * 1.5)
    for beat in range(1, 40):  # the player on the beats, improv on the off-beats
        session.note(START_S + beat / 1.5, 60 + beat % 12, "player")
        session.note(START_S + (beat + 0.5) / 1.5, 72, "improv", length_s=rng.uniform(0.05, 0.3))
    metas, ticks, seconds = session.record()
    assert _meters(metas) == [(0, 3, 4)]
    assert _tempos(metas) == [(0, 90.0)]
    assert sorted({tick % TICKS_PER_BEAT for tick, track, _ in ticks if track == 0}) == [0]  # on the beats
    assert sorted({tick % TICKS_PER_BEAT for tick, track, _ in ticks if track == 1}) == [TICKS_PER_BEAT // 2]
    assert [tick for tick, track, _ in ticks if track == 0][:4] == [480, 960, 1440, 1920]
    _assert_real_times(seconds, session.played, _file_tick_s(90))


@pytest.mark.parametrize("flush_every_s", [None, 0.7])
def test_a_tempo_change_mid_take_keeps_both_tempos_and_the_beat(tmp_path, flush_every_s):
    session = Session(tmp_path, flush_every_s)
    time_s, beat = START_S, 0.0
    while time_s < START_S + 20:  # 120 bpm for 20 beats, then 140
        bpm = 120.0 if beat < 20 - 1e-9 else 140.0
        session.tempo(time_s, bpm, beat)
        time_s, beat = time_s + 0.01, beat + bpm / 60 * 0.01
    for index in range(40):
        beat_s = index * 0.5 if index <= 20 else 10 + (index - 20) * 60 / 140
        session.note(START_S + beat_s, 60 + index % 5, "player" if index % 2 else "improv")
    metas, ticks, seconds = session.record()
    assert _tempos(metas) == [(0, 120.0), (20 * TICKS_PER_BEAT, 140.0)]
    assert all(abs(tick - index * TICKS_PER_BEAT) <= 1 for index, (tick, _, _) in enumerate(sorted(ticks)))
    _assert_real_times(seconds, session.played, _file_tick_s(140))


def test_a_jittery_tempo_estimate_writes_one_tempo_not_hundreds(tmp_path):
    session = Session(tmp_path, flush_every_s=5.0)
    rng = random.Random(1)
    beat = 0.0
    for i in range(6000):  # a minute of readings every 10 ms, each 120 +- 0.2 bpm, the beat as estimated
        bpm = 120 + rng.uniform(-0.2, 0.2)
        session.tempo(START_S + i * 0.01, bpm, beat)
        beat += bpm / 60 * 0.01
    for index in range(100):
        session.note(START_S + index * 0.5 + 0.001, 64, "improv")
    metas, ticks, seconds = session.record()
    assert _tempos(metas) == [(0, 120.0)]
    assert all(abs(tick - index * TICKS_PER_BEAT) <= 2 for index, (tick, _, _) in enumerate(ticks))
    _assert_real_times(seconds, session.played, _file_tick_s(120))


def test_without_tempo_calls_the_file_is_as_before(tmp_path):
    takes = []
    for meter in (None, (3, 4)):  # the daemon says the meter at the start, tempo or not
        session = Session(tmp_path / str(meter), flush_every_s=2.0, meter=meter)
        rng = random.Random(2)
        for _ in range(200):
            session.note(START_S + rng.uniform(0, 30), rng.randrange(40, 90), rng.choice(["player", "improv"]),
                         rng.uniform(0.01, 0.5))
        session.record()
        takes.append(session.recorder.path.read_bytes())
    assert takes[0] == takes[1]
    midi = mido.MidiFile(session.recorder.path)
    assert [m.type for m in midi.tracks[0] if m.is_meta] == ["track_name", "set_tempo", "end_of_track"]
    assert next(m.tempo for m in midi.tracks[0] if m.type == "set_tempo") == 500_000
    assert len(takes[0]) == session.recorder.encoded_bytes


def test_a_tempo_first_heard_after_free_playing_starts_a_bar_of_the_file(tmp_path):
    # The player plays freely for 30 s; then a DAW's clock starts (beat 0 at 30 s, 120 bpm), known
    # from its third pulse on, its estimate jittering; improv plays on the beats from then on.
    session = Session(tmp_path, flush_every_s=2.0)
    rng = random.Random(3)
    free = sorted(rng.uniform(0.0, 29.9) for _ in range(30))
    for time_s in free:
        session.note(START_S + time_s, 50, "player", length_s=0.05)
    time_s = 30.0 + 2 / 48
    while time_s < 60:
        session.tempo(START_S + time_s, 120 + rng.gauss(0, 0.1), (time_s - 30) * 2 + rng.gauss(0, 0.001))
        time_s += rng.uniform(0.005, 0.03)
    for beat in range(0, 56):
        session.note(START_S + 30 + beat * 0.5, 72, "improv")
    metas, ticks, seconds = session.record()
    tempos = _tempos(metas)
    assert tempos[0] == (0, 120.0) and tempos[-1][1] == 120.0 and len(tempos) <= 3
    improv = [tick for tick, track, _ in ticks if track == 1]
    lines = _bar_lines(metas, improv[-1] + 1)
    downbeat = min(lines, key=lambda line: abs(line - improv[0]))
    assert abs(improv[0] - downbeat) <= 2  # the clock's beat 0 is a bar line of the file (its estimate jitters) ...
    assert all(abs(tick - downbeat - beat * TICKS_PER_BEAT) <= 3 for beat, tick in enumerate(improv))  # ... its beats the file's
    assert _meters(metas)[0] == (0, 4, 4)
    _assert_real_times(seconds, session.played, _file_tick_s(120))


@pytest.mark.parametrize("flush_every_s", [None, 1.0])
def test_each_new_start_of_the_bars_is_a_bar_line_of_the_file(tmp_path, flush_every_s):
    # improv's own tempo (100 bpm) counts its bars from each phrase's first note: the beat jumps.
    session = Session(tmp_path, flush_every_s)
    rng = random.Random(4)
    phrase_s, downbeats = 1.3, []
    while phrase_s < 60:
        downbeats.append(phrase_s)
        at = phrase_s
        for index in range(rng.randint(3, 8)):  # the player, in free time
            session.note(START_S + at, 60 + index, "player")
            at += rng.uniform(0.1, 0.5)
        first = int((at + 0.5 - phrase_s) * 100 / 60) + 1
        for half_beat in range(rng.randint(4, 12)):  # improv's answer, on the eighths of the new bars
            answer_s = phrase_s + (first + half_beat / 2) * 0.6
            session.note(START_S + answer_s, 80, "improv", length_s=0.2)
        phrase_s += (first + 8) * 0.6 + rng.uniform(0.2, 2.0)
    time_s, anchors = 0.0, [0.0] + downbeats
    while time_s < 65:
        origin = max(a for a in anchors if a <= time_s)
        session.tempo(START_S + time_s, 100.0, (time_s - origin) * 100 / 60)
        time_s += rng.uniform(0.005, 0.05)
    metas, ticks, seconds = session.record()
    end = max(tick for tick, _, _ in ticks) + 1
    lines = _bar_lines(metas, end)
    player = sorted(tick for tick, track, _ in ticks if track == 0)
    played = sorted(session.player)
    firsts = [player[played.index(START_S + downbeat)] for downbeat in downbeats]
    assert all(min(abs(first - line) for line in lines) <= 1 for first in firsts)  # each phrase on a bar line
    for tick, track, _ in ticks:
        if track == 1:  # each answer note on an eighth of its bar
            bar = max(line for line in lines if line <= tick + 1)
            assert min((tick - bar) % 240, -(tick - bar) % 240) <= 1
    shortened = [meter for meter in _meters(metas) if meter[1:] != (4, 4)]
    assert shortened and all(denominator in (4, 8, 16) for _, _, denominator in shortened)
    tempos = _tempos(metas)
    for first in firsts:  # each phrase at improv's tempo; the silence before it bent a little to meet it
        assert [bpm for tick, bpm in tempos if tick <= first + 1][-1] == 100.0
    assert all(60 <= bpm <= 200 for _, bpm in tempos)
    assert len(tempos) <= 2 * len(downbeats) + 1  # a bend before each new start, and back
    _assert_real_times(seconds, session.played, _file_tick_s(100) * 1.1)


def test_a_song_position_jump_mid_bar_shortens_the_bar_it_falls_in(tmp_path):
    session = Session(tmp_path, flush_every_s=1.0)
    time_s = 0.0
    while time_s < 40:  # 120 bpm; at 20 s the song jumps to beat 64.5 (half a beat into bar 17)
        session.tempo(START_S + time_s, 120.0, time_s * 2 if time_s < 20 else 64.5 + (time_s - 20) * 2)
        time_s += 0.01
    for beat in range(40):
        session.note(START_S + beat * 0.5, 60, "improv")
    for beat in range(65, 100):
        session.note(START_S + 20 + (beat - 64.5) * 0.5, 62, "improv")
    metas, ticks, seconds = session.record()
    before = [tick for tick, _, note in ticks if note == 60]
    after = [tick for tick, _, note in ticks if note == 62]
    assert before == [beat * TICKS_PER_BEAT for beat in range(40)]
    meters = _meters(metas)
    assert meters[0] == (0, 4, 4) and meters[-1][1:] == (4, 4) and len(meters) == 3
    new_bar = meters[-1][0]
    assert [tick - new_bar for tick in after] == [(beat - 64) * TICKS_PER_BEAT for beat in range(65, 100)]
    _assert_real_times(seconds, session.played, _file_tick_s(120))


def test_pedal_bends_and_programs_keep_their_order_and_times_on_the_tempo_map(tmp_path):
    recorder = SessionRecorder(tmp_path, flush_s=60, start_s=0.0)
    recorder.tempo(0.0, 75.0, 0.0)
    sent = [(0.8, [0xB0, 64, 127]), (0.8, [0x90, 60, 80]), (1.0, [0xE0, 0, 80]), (1.2, [0xC0, 5]),
            (1.4, [0xD0, 40]), (1.6, [0x80, 60, 0]), (1.6, [0xB0, 64, 0])]
    for time_s, data in sent:
        if data[0] & 0xF0 in (0x80, 0x90):
            recorder.player(time_s, data[1], data[2] if data[0] & 0xF0 == 0x90 else 0)
        else:
            recorder.player_message(time_s, data)
        recorder.tempo(time_s, 75.0, time_s * 1.25)
    recorder.close()
    midi = mido.MidiFile(recorder.path)
    got, now = [], 0.0
    for msg in midi:
        now += msg.time
        if not msg.is_meta:
            got.append((round(now, 3), msg.bytes()))
    assert got == sent


def test_write_tracks_at_a_bpm_and_meter_imports_in_time(tmp_path):
    path = tmp_path / "out.mid"
    seed = [NoteEvent(beat / 1.5, 60, 90 if on else 0) for beat in range(8) for on in (True, False)]
    answer = [NoteEvent((8 + beat) / 1.5 + (0 if on else 0.3), 67, 70 if on else 0) for beat in range(8) for on in (1, 0)]
    write_tracks(path, [("player", seed), ("improv", answer)], bpm=90, meter="3/4")
    metas, ticks, seconds = _read(path)
    assert _meters(metas) == [(0, 3, 4)] and _tempos(metas) == [(0, 90.0)]
    assert [tick for tick, _, _ in sorted(ticks)] == [beat * TICKS_PER_BEAT for beat in range(16)]
    assert max(abs(s - beat / 1.5) for beat, (s, _) in enumerate(sorted(seconds))) <= _file_tick_s(90)
    # Beat 0 after the file's start: a pickup bar before it, so it is a bar line.
    write_tracks(path, [("player", [NoteEvent(0.3 + e.time_s, e.pitch, e.velocity) for e in seed])],
                 bpm=90, meter=(3, 4), downbeat_s=0.3)
    metas, ticks, seconds = _read(path)
    assert _meters(metas) == [(0, 1, 8), (240, 3, 4)]
    assert _tempos(metas) == [(0, 100.0), (240, 90.0)]  # the pickup's eighth in the 0.3 s before
    assert [tick for tick, _, _ in ticks] == [240 + beat * TICKS_PER_BEAT for beat in range(8)]
    with pytest.raises(ValueError, match="time signature"):
        write_tracks(path, [("player", seed)], bpm=90, meter="3/5")


def test_the_plan_ignores_what_it_cannot_use_and_stops_when_settled():
    plan = TempoMap(6, 8)
    for bad in [(1.0, float("nan"), 0.0), (1.0, 0.0, 0.0), (1.0, 120.0, float("inf")), (1.0, 5000.0, 1.0)]:
        plan.tempo(*bad)
    assert not plan.known
    plan.tempo(0.5, 120.0, 1.0)
    assert plan.known and plan.meters[-1][1:] == (6, 8)
    with pytest.raises(ValueError):
        plan.set_meter(4, 4)
    plan.settle(float("inf"))
    plan.tempo(10.0, 200.0, 99.0)  # after the take's end: nothing more (and no endless loop)
    assert plan.tempos[-1] == 500_000 and plan.view().metas


def test_a_meter_said_after_the_tempo_is_ignored_once_with_a_warning(tmp_path, caplog):
    recorder = SessionRecorder(tmp_path, flush_s=60, start_s=0.0)
    with pytest.raises(ValueError):
        recorder.meter(4, 3)
    recorder.meter(6, 8)
    recorder.tempo(0.0, 120.0, 0.0)
    recorder.tempo(1.0, 120.0, None)  # no beat known: ignored
    with caplog.at_level(logging.WARNING, logger="improv"):
        recorder.meter(6, 8)  # the same again: nothing to say
        recorder.meter(3, 4)
        recorder.meter(3, 4)
    assert len([r for r in caplog.records if "meter" in r.getMessage()]) == 1
    recorder.close()
    metas, _, _ = _read(recorder.path)
    assert _meters(metas) == [(0, 6, 8)]
    assert next(msg.clocks_per_click for _, msg in metas if msg.type == "time_signature") == 36
