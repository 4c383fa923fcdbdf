"""An independent model of what a listener hears from MIDI messages, to check the codec against."""

from improv.events import Note


def reference_notes(messages):
    """Notes as a listener hears them, computed independently of the Encoder: channels merged,
    drums dropped, a key released under the pedal sounds until the pedal lifts or the key is struck again."""
    messages = list(messages)
    if not messages:
        return []
    pedal_ups, down_since = [], None
    for t, m in messages:
        if m.type == "control_change" and m.control == 64:
            if m.value >= 64 and down_since is None:
                down_since = t
            elif m.value < 64 and down_since is not None:
                pedal_ups.append((down_since, t))
                down_since = None
    end = messages[-1][0]
    if down_since is not None:
        pedal_ups.append((down_since, end))
    open_notes, notes = {}, []
    for t, m in messages:
        if m.type not in ("note_on", "note_off") or m.channel == 9:
            continue
        if m.type == "note_on" and m.velocity > 0:
            if m.note in open_notes:
                notes.append([m.note, *open_notes.pop(m.note), t])  # re-strike
            open_notes[m.note] = (t, m.velocity, None)
        elif m.note in open_notes and open_notes[m.note][2] is None:  # a second note-off changes nothing
            onset, velocity, _ = open_notes[m.note]
            release = next((up for down, up in pedal_ups if down < t < up), None)
            if release is None:
                notes.append([m.note, onset, velocity, t])
                del open_notes[m.note]
            else:
                open_notes[m.note] = (onset, velocity, release)
    out = []
    for pitch, onset, velocity, release, *restrike in notes:
        out.append(Note(pitch, onset, min([x for x in (release, *restrike) if x is not None]), velocity))
    for pitch, (onset, velocity, release) in open_notes.items():
        out.append(Note(pitch, onset, release if release is not None else end, velocity))
    return sorted(out, key=lambda n: (n.onset_s, n.pitch))
