"""Shared fixtures: real MIDI files from music21's corpus and the shipped model."""

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
CHORALE = DATA / "bach_bwv66.6.mid"  # J.S. Bach, BWV 66.6, written from music21's corpus
EXPRESSIVE = DATA / "joplin_expressive_pedal.mid"  # Joplin, with velocities, timing jitter, two channels, pedal


@pytest.fixture(scope="session")
def shipped_model():
    from improv.model import OnnxModel, default_model_path

    return OnnxModel(default_model_path())


@pytest.fixture(scope="module")
def jack():
    from jackserver import JackServer

    server = JackServer()
    yield server
    server.stop()
