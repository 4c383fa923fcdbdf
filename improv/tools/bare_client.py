"""A bare JACK MIDI program, for the benchmark's floors: it holds an input and an output open through
the same kind of client as improv's and either does nothing (the idle floor) or echoes each message
at once (the transport's share of a reaction).

    python -m improv.tools.bare_client --name echo --backend jack --echo
"""

from __future__ import annotations

import argparse
import sys
import time

LIFETIME_S = 120.0  # the benchmark kills it long before; a forgotten one still ends


def port_names(name: str, backend: str) -> tuple[str, str]:
    """The (input, output) port names the client opens."""
    if backend == "jack":
        return f"{name}:in", f"{name}:out"
    return f"{name}-in:in", f"{name}-out:out"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the JACK client name")
    parser.add_argument("--backend", choices=["jack", "jack-rtmidi"], default="jack",
                        help="improv's own native client, or python-rtmidi's (default: jack)")
    parser.add_argument("--echo", action="store_true", help="send each message received straight back out")
    args = parser.parse_args(argv)
    if args.backend == "jack":
        from improv.midi.jack import JackMidiClient

        client = JackMidiClient.acquire(args.name)
        if args.echo:
            client.listen(lambda raw: client.send(raw.data))
    else:
        import rtmidi

        api = rtmidi.API_UNIX_JACK
        midi_out = rtmidi.MidiOut(rtapi=api, name=f"{args.name}-out")
        midi_out.open_virtual_port("out")
        midi_in = rtmidi.MidiIn(rtapi=api, name=f"{args.name}-in")
        midi_in.open_virtual_port("in")
        if args.echo:
            midi_in.set_callback(lambda event, _: midi_out.send_message(event[0]))
    time.sleep(LIFETIME_S)
    return 0


if __name__ == "__main__":
    sys.exit(main())
