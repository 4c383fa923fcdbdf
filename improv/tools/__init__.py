"""Developer tools: the benchmark (`improv bench`), the soak (`python -m improv.tools.soak`), the
test and benchmark probe, private JACK servers and /proc readers. `improv run` imports none of them."""
