from improv.daemon import Backlog
from improv.midi.messages import RawInput


def raw(*data):
    return RawInput(0.0, list(data))


def test_backlog_keeps_order_and_sheds_non_notes_first():
    backlog = Backlog(limit=4)
    for item in (raw(0x90, 60, 80), raw(0xB0, 1, 2), raw(0x80, 60, 0), raw(0xE0, 0, 64), raw(0x90, 62, 80)):
        backlog.push(item)
    assert backlog.dropped == 1
    assert [r.data for r in iter(backlog.pop, None)] == [[0x90, 60, 80], [0x80, 60, 0], [0xE0, 0, 64], [0x90, 62, 80]]


def test_a_flood_stays_bounded_and_keeps_the_newest():
    backlog = Backlog(limit=100)
    for i in range(10_000):
        backlog.push(raw(0x90, i % 128, 64))
        backlog.push(raw(0xF8))
        backlog.push(raw(0x80, i % 128, 0))
    kept = list(iter(backlog.pop, None))
    assert len(kept) == 100 and backlog.dropped == 30_000 - 100
    assert kept[-1].data == [0x80, 9_999 % 128, 0]
