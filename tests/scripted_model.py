"""A model for exact engine tests: it returns the logits the test chooses, and its state is the
list of tokens it was fed, so snapshot and restore are exact and a test can assert precisely what
the model heard."""

from __future__ import annotations

from typing import Callable

import numpy as np

from improv.events import Vocabulary

# Far enough below the favoured logit that sampling never picks the rest (exp underflows to 0 in
# float32) yet finite, so a mask that removes the favourite leaves the others to choose from.
UNLIKELY = -1e4


class ScriptedModel:
    """Implements improv.engine.SteppedModel. `logits_for(history)` gives the next-token logits
    after the tokens fed so far (the state); `calls` logs every call and is not rolled back."""

    def __init__(self, logits_for: Callable[[list[int]], np.ndarray], vocab: Vocabulary | None = None):
        self.vocab = vocab or Vocabulary()
        self.logits_for = logits_for
        self.history: list[int] = []
        self.calls: list[tuple[str, tuple[int, ...]]] = []

    def reset(self) -> None:
        self.history = []
        self.calls.append(("reset", ()))

    def step(self, token: int) -> np.ndarray:
        self.history.append(int(token))
        self.calls.append(("step", (int(token),)))
        return self._logits()

    def prime(self, tokens: list[int]) -> np.ndarray:
        self.calls.append(("prime", tuple(int(t) for t in tokens)))
        every = []
        for token in tokens:
            self.history.append(int(token))
            every.append(self._logits())
        return np.stack(every)

    def snapshot(self) -> tuple[int, ...]:
        return tuple(self.history)

    def restore(self, state: tuple[int, ...]) -> None:
        self.history = list(state)
        self.calls.append(("restore", ()))

    def _logits(self) -> np.ndarray:
        return np.asarray(self.logits_for(list(self.history)), dtype=np.float32)


def favour(vocab: Vocabulary, *tokens: int) -> np.ndarray:
    """Logits that make `tokens` (equally) the only choice, unless masked."""
    logits = np.full(vocab.size, UNLIKELY, dtype=np.float32)
    logits[list(tokens)] = 0.0
    return logits


def melody(vocab: Vocabulary, low: int = 70, high: int = 84, shift_steps: int = 10) -> Callable[[list[int]], np.ndarray]:
    """improv's line for a test: NOTE_ON, a time shift, its NOTE_OFF, then the next pitch, climbing by
    whole tones from `low` and around again. Pitches from `low` up are improv's; the player plays
    below, so what was heard tells where improv's line stands."""
    pitches = list(range(low, high + 1, 2))

    def logits_for(history: list[int]) -> np.ndarray:
        group, value = vocab.decode_token(history[-1])
        if group == "NOTE_ON" and value >= low:
            return favour(vocab, vocab.time_shift(shift_steps))
        if group == "TIME_SHIFT" and len(history) > 1:
            before, pitch = vocab.decode_token(history[-2])
            if before == "NOTE_ON" and pitch >= low:
                return favour(vocab, vocab.note_off(pitch))
        played = sum(1 for t in history if vocab.decode_token(t)[0] == "NOTE_ON" and vocab.decode_token(t)[1] >= low)
        return favour(vocab, vocab.note_on(pitches[played % len(pitches)]))

    return logits_for
