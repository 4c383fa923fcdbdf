"""improv: a real-time LSTM improviser for MIDI players."""

__version__ = "0.1.0"
