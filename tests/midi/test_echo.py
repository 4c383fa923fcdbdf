"""The echo filter: improv's own messages coming back on its input, recognised exactly."""

from improv.midi.guard import EchoFilter


def test_an_echo_is_the_same_message_within_the_window_and_the_late_note_off_of_an_echoed_note():
    echoes = EchoFilter(0.030)
    echoes.sent([0x92, 60, 80], 1.000)
    assert not echoes.is_echo([0x92, 60, 81], 1.010)  # another velocity: the player's
    assert not echoes.is_echo([0x91, 60, 80], 1.010)  # another channel
    assert echoes.is_echo([0x92, 60, 80], 1.010)
    assert not echoes.is_echo([0x92, 60, 80], 1.012)  # one send, one echo
    assert not echoes.is_echo([0x82, 60, 0], 1.100)  # improv has not released 60: this note-off is the player's
    echoes.sent([0x82, 60, 0], 2.000)
    assert echoes.is_echo([0x92, 60, 0], 2.500)  # its note-off, late and as a note-on of velocity 0
    assert not echoes.is_echo([0x82, 60, 0], 2.600)
    echoes.sent([0x92, 62, 80], 3.000)
    assert not echoes.is_echo([0x92, 62, 80], 3.031)  # outside the window
    assert echoes.count == 2


def test_a_window_of_0_turns_it_off():
    echoes = EchoFilter(0)
    echoes.sent([0x90, 60, 80], 1.0)
    assert not echoes.is_echo([0x90, 60, 80], 1.0)
