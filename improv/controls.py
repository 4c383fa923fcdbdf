"""Live settings by MIDI control change: a CC value 0..127 mapped onto each setting's range. Pure."""

from __future__ import annotations

from typing import Any, Callable

from improv.config import Config


def _span(low: float, high: float) -> Callable[[int], float]:
    return lambda value: low + (high - low) * value / 127


# setting -> (config section, CC value -> setting value); ranges are documented in config.yaml
MAPPINGS: dict[str, tuple[str, Callable[[int], Any]]] = {
    "temperature": ("sampling", lambda v: round(_span(0.1, 2.0)(v), 3)),
    "top_p": ("sampling", lambda v: round(_span(0.5, 1.0)(v), 3)),
    "mode": ("engine", lambda v: "continuous" if v >= 64 else "call-response"),
    "enabled": ("engine", lambda v: v >= 64),
    "response_ms": ("engine", lambda v: round(_span(1000, 16000)(v))),
    "pitch_low": ("limits", lambda v: v),
    "pitch_high": ("limits", lambda v: v),
    "max_polyphony": ("limits", lambda v: round(_span(1, 16)(v))),
    "max_note_ms": ("limits", lambda v: round(_span(100, 8000)(v))),
    "velocity_scale": ("limits", lambda v: round(_span(0.25, 2.0)(v), 3)),
}


def apply_control(config: Config, control: int, value: int) -> tuple[str, Any] | None:
    """Apply a CC to the live config if it is mapped; returns (dotted key, new value) or None."""
    for setting, cc in vars(config.controls).items():
        if cc is None or cc != control:
            continue
        section_name, convert = MAPPINGS[setting]
        new_value = convert(value)
        section = getattr(config, section_name)
        setattr(section, setting, new_value)
        limits = config.limits  # keep the pitch range non-empty whichever end moved
        if setting == "pitch_low" and limits.pitch_high < new_value:
            limits.pitch_high = new_value
        if setting == "pitch_high" and limits.pitch_low > new_value:
            limits.pitch_low = new_value
        return f"{section_name}.{setting}", new_value
    return None
