"""Live settings by MIDI control change. Pure.

Which CC turns which setting is `controls.*` in the config; how far the CC's value 0..127 sweeps a
setting is declared once, on the setting's own field (improv.config: `knob`, `knob_values`).
"""

from __future__ import annotations

from typing import Any

from improv.config import Config, actions, knobs, rules

CC_VALUE_MAX = 127


def knob_value(dotted: str, cc_value: int) -> Any:
    """The setting's value for a CC value 0..127."""
    rule = rules(dotted)
    if "knob_values" in rule:
        values = rule["knob_values"]
        return values[min(cc_value * len(values) // (CC_VALUE_MAX + 1), len(values) - 1)]
    low, high = rule["knob"]
    value = low + (high - low) * cc_value / CC_VALUE_MAX
    return round(value) if isinstance(low, int) and isinstance(high, int) else round(value, 3)


def action_for(config: Config, control: int) -> str | None:
    """The action (a `controls.*` name marked action, such as "reset") this CC triggers, if any."""
    return next((name for name in actions() if getattr(config.controls, name) == control), None)


def apply_control(config: Config, control: int, value: int) -> tuple[str, Any] | None:
    """Apply a CC to the live config if it turns a setting; returns (dotted key, new value) or None."""
    for setting, cc in vars(config.controls).items():
        if cc is None or cc != control or setting in actions():
            continue
        dotted = knobs()[setting]
        section_name, name = dotted.split(".")
        if dotted == "model.style":  # none, then the loaded model's styles, over the CC's range
            choices = (None, *config.model.loaded_styles)
            new_value = choices[min(value * len(choices) // (CC_VALUE_MAX + 1), len(choices) - 1)]
            config.model.style = new_value
            return dotted, new_value
        new_value = knob_value(dotted, value)
        setattr(getattr(config, section_name), name, new_value)
        limits = config.limits  # keep the pitch range non-empty whichever end moved
        if setting == "pitch_low" and limits.pitch_high < new_value:
            limits.pitch_high = new_value
        if setting == "pitch_high" and limits.pitch_low > new_value:
            limits.pitch_low = new_value
        return dotted, new_value
    return None
