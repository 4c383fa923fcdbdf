"""`improv learn SETTING`: map the next CC the player moves to a setting, in the config file.

The file is edited as text, one line (the setting's line under `controls:`, added if missing), so
its comments and layout stay as they were; the result is loaded and checked before it replaces the
file, and a CC already mapped to another control is refused with both named.
"""

from __future__ import annotations

import queue
import re
import time
from dataclasses import fields
from pathlib import Path

from improv import config as config_module
from improv.config import LAST_KNOB_CC, ControlsSection, knobs
from improv.errors import ConfigError, ImprovError
from improv.midi.files import replace_file
from improv.midi.messages import CONTROL_CHANGE
from improv.paths import CONFIG_NAME, config_candidates

SECTION = "controls"


def control_name(setting: str) -> str:
    """The `controls.*` name for SETTING: a control's own name (temperature, reset, key_strength) or
    the dotted key of a setting a CC turns (key.strength, sampling.temperature)."""
    names = [item.name for item in fields(ControlsSection)]
    if setting in names:
        return setting
    by_dotted = {dotted: name for name, dotted in knobs().items()}
    if setting in by_dotted:
        return by_dotted[setting]
    raise ImprovError(f"{setting!r} is not a setting a CC can control; choose one of {', '.join(names)}")


def learn_file(explicit: str | None) -> Path:
    """The file `improv run` would read (--config, ./config.yaml, the user's), or ./config.yaml if none."""
    for candidate in config_candidates(explicit):
        if explicit is not None or candidate.is_file():
            return candidate
    return Path.cwd() / CONFIG_NAME


def with_mapping(text: str, name: str, cc: int) -> str:
    """`text` (a config file) with `controls.NAME: CC`: the value on its line replaced (comment and
    alignment kept), or the line added under `controls:`, or the section added at the end."""
    lines = text.splitlines(keepends=True)
    section = next((i for i, line in enumerate(lines) if re.match(rf"^{SECTION}\s*:", line)), None)
    if section is None:
        ending = "" if not text or text.endswith("\n") else "\n"
        return f"{text}{ending}{SECTION}:\n  {name}: {cc}\n"
    if re.match(rf"^{SECTION}\s*:\s*[^\s#]", lines[section]):
        raise ImprovError(f"the {SECTION} section is written on one line ({lines[section].strip()}); write it as "
                          f"one key a line to let improv learn into it, or set {SECTION}.{name}: {cc} by hand")
    end, indent = len(lines), "  "
    for i in range(section + 1, len(lines)):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            end = i
            break
        indent = re.match(r"^(\s*)", line).group(1)
        match = re.match(rf"^(\s+{re.escape(name)}\s*:\s*)([^#\n]*?)(\s*)(#.*)?(\r?\n)?$", line)
        if match:
            prefix, old, space, comment, newline = match.groups()
            value = str(cc)
            if comment:  # keep the comment where it was when the new value fits before it
                space = " " * max(1, len(old) + len(space) - len(value))
                lines[i] = f"{prefix}{value}{space}{comment}{newline or ''}"
            else:
                lines[i] = f"{prefix}{value}{newline or ''}"
            return "".join(lines)
    # Not there yet: add it after the section's last key.
    last = end
    while last > section + 1 and not lines[last - 1].strip():
        last -= 1
    if last > 0 and not lines[last - 1].endswith("\n"):
        lines[last - 1] += "\n"
    lines.insert(last, f"{indent}{name}: {cc}\n")
    return "".join(lines)


def wait_for_cc(midi_system, client_name: str, port: str | None, timeout_s: float | None,
                announce=print) -> int:
    """Open the input as `improv run` does and return the number of the next CC moved (0..119)."""
    messages: queue.SimpleQueue = queue.SimpleQueue()
    inputs = midi_system.open_input(client_name, port, messages.put, time.monotonic)
    try:
        announce(f"move the control to learn; listening on {inputs.name} (Ctrl-C to stop)")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                raise ImprovError(f"no control change came within {timeout_s:g} s on {inputs.name}; connect your "
                                  f"controller to it (improv ports lists what improv sees) and move the control")
            try:
                raw = messages.get(timeout=wait if wait is not None else 0.5)
            except queue.Empty:
                continue
            data = raw.data
            if len(data) == 3 and data[0] & 0xF0 == CONTROL_CHANGE and data[1] <= LAST_KNOB_CC:
                return data[1]
    finally:
        inputs.close()


def learn(setting: str, path: Path, midi_system, client_name: str, port: str | None,
          timeout_s: float | None = None, announce=print) -> int:
    """Wait for a CC and write `controls.SETTING: CC` into `path`; returns the CC."""
    name = control_name(setting)
    text = path.read_text() if path.is_file() else ""
    config_module.load(path if path.is_file() else None)  # a file that does not load stops here, first
    cc = wait_for_cc(midi_system, client_name, port, timeout_s, announce)
    edited = with_mapping(text, name, cc)
    tmp = path.with_name(f".{path.name}.learn")
    tmp.write_text(edited)
    try:
        config_module.load(tmp)
    except ConfigError as err:
        raise ImprovError(f"CC {cc} cannot control {name}: {err}") from err
    finally:
        tmp.unlink(missing_ok=True)
    replace_file(path, [edited.encode()])
    return cc
