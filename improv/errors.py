"""One error family. Subclasses also inherit the built-in type a caller would expect."""


class ImprovError(Exception):
    """Base of every error improv raises on purpose; its message says what to do."""


class ConfigError(ImprovError, ValueError):
    """A config key is unknown or its value is out of range; the message names the dotted key."""


class ModelError(ImprovError, OSError):
    """A model file is missing, corrupt, or not an improv model."""


class ModelSpecError(ModelError):
    """A model's vocabulary spec is one this improv cannot serve."""


class MidiFileError(ImprovError, ValueError):
    """A MIDI file cannot be read or holds nothing improv can use."""


class PortError(ImprovError, OSError):
    """A MIDI port cannot be found or opened, or no MIDI system is available."""


class RecordingError(ImprovError, OSError):
    """The session recording's folder cannot be created or written."""
