"""improv's MIDI edge: messages as bytes, the port interface and its two backends (python-rtmidi,
and improv's own JACK client with its C process callback), MIDI files, the session recording, and
the output guard. Importing the package loads no backend: each is loaded where it is used."""
