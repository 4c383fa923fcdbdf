"""Plain numbers that say whether a continuation sounds like music: register, variety, rhythm, gaps."""

from __future__ import annotations

from collections import Counter

from improv.events import NoteEvent


def note_stats(events: list[NoteEvent]) -> dict:
    onsets = sorted((e.time_s, e.pitch) for e in events if e.is_on)
    if not onsets:
        return {"notes": 0}
    pitches = [p for _, p in onsets]
    times = sorted({round(t, 2) for t, _ in onsets})
    intervals = [round(b - a, 2) for a, b in zip(times, times[1:])]
    run, longest_run = 1, 1  # the longest run of onsets on one pitch alone (a one-note loop)
    for (_, a), (_, b) in zip(onsets, onsets[1:]):
        run = run + 1 if a == b else 1
        longest_run = max(longest_run, run)
    sounding, silent_since, longest_silence, most_sounding = set(), onsets[0][0], 0.0, 0
    for event in sorted(events, key=lambda e: (e.time_s, e.is_on)):
        if event.is_on:
            if not sounding:
                longest_silence = max(longest_silence, event.time_s - silent_since)
            sounding.add(event.pitch)
            most_sounding = max(most_sounding, len(sounding))
        else:
            sounding.discard(event.pitch)
            if not sounding:
                silent_since = event.time_s
    return {
        "notes": len(onsets),
        "span_s": round(onsets[-1][0] - onsets[0][0], 2),
        "lowest": min(pitches), "highest": max(pitches),
        "median_pitch": sorted(pitches)[len(pitches) // 2],
        "distinct_pitches": len(set(pitches)),
        "distinct_onset_intervals": len(Counter(intervals)),
        "longest_silence_s": round(longest_silence, 2),
        "longest_one_pitch_run": longest_run,
        "most_notes_at_once": most_sounding,
        "onsets_per_s": round(len(onsets) / max(onsets[-1][0] - onsets[0][0], 1e-9), 2),
    }
