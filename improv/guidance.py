"""Style guidance: how strongly the chosen style steers what improv plays. Pure (numpy only).

Once a phrase is heard, the phrase says much of what comes next, so a style token moves the model as
trained only so far (docs/development.md, "Styles"). Guidance (classifier-free guidance, as image and
audio models are steered by a prompt) sets two contexts side by side: one heard the style tokens, one
did not; both hear everything else. The logits sampled are plain + strength * (styled - plain):
strength 1 is the model as trained, 0 ignores the style, and above 1 moves further along the
difference the style makes.

The two contexts are two rows of one model call, which costs what one row does (the step reads the
weights once), so guidance adds a subtraction and a multiply-add over the vocabulary per token.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

STYLED, PLAIN = 0, 1  # the rows of the two-row model


class StyleGuidance:
    """A SteppedModel (improv.engine) over a two-row model: row STYLED hears the style token, row PLAIN
    does not. `strength()` is read at every token, so a knob turned live takes effect at once. With no
    style token heard since the last reset the rows are the same and the styled row's logits are used."""

    def __init__(self, model: Any, strength: Callable[[], float]):
        if getattr(model, "rows", 1) != 2:
            raise ValueError("style guidance needs a model stepping two rows (OnnxModel.use_rows(2))")
        self.model, self.strength = model, strength
        self.vocab = model.vocab
        self.styled = False  # a style token was heard since the last reset: the rows differ
        self._mixed = np.zeros(model.vocab.size, np.float32)
        self._plain = np.zeros(model.vocab.size, np.float32)  # the plain row's last logits

    @property
    def path(self):
        """The model's file (the status line and the log name it)."""
        return self.model.path

    def _mix(self, styled: np.ndarray, plain: np.ndarray, out: np.ndarray) -> np.ndarray:
        np.subtract(styled, plain, out=out)
        out *= np.float32(self.strength())
        out += plain
        return out

    def reset(self) -> None:
        self.model.reset()
        self.styled = False
        self._plain.fill(0.0)

    def step(self, token: int) -> np.ndarray:
        if self.vocab.is_style(token):
            return self.prime([token])[-1]
        both = self.model.step(token)
        np.copyto(self._plain, both[PLAIN])
        if not self.styled or self.strength() == 1.0:
            return both[STYLED]
        return self._mix(both[STYLED], both[PLAIN], self._mixed)

    def prime(self, tokens: list[int]) -> np.ndarray:
        last_style = max((i for i, t in enumerate(tokens) if self.vocab.is_style(t)), default=-1)
        if last_style >= 0:
            head = self._diverge(tokens[: last_style + 1])
            if last_style == len(tokens) - 1:
                return head
            return np.concatenate([head, self.prime(tokens[last_style + 1:])])
        both = self.model.prime(tokens)
        np.copyto(self._plain, both[PLAIN, -1])
        if not self.styled or self.strength() == 1.0:
            return both[STYLED]
        return self._mix(both[STYLED], both[PLAIN], np.empty_like(both[STYLED]))

    def _diverge(self, head: list[int]) -> np.ndarray:
        """Feed `head` (which ends with a style token) to the styled row, and all but its style tokens
        to the plain row, each in a one-row run outside the bound two-row step. Style tokens come after
        START and before each answer (improv.engine), never between an answer's notes."""
        h, c = self.model.snapshot()
        styled_logits, (hs, cs) = self.model.run(np.array([head], np.int64), (h[:, STYLED:STYLED + 1], c[:, STYLED:STYLED + 1]))
        plain_head = [t for t in head if not self.vocab.is_style(t)]
        plain_logits, hp, cp = self._plain[None], h[:, PLAIN:PLAIN + 1], c[:, PLAIN:PLAIN + 1]
        if plain_head:
            logits, (hp, cp) = self.model.run(np.array([plain_head], np.int64), (hp, cp))
            plain_logits = np.concatenate([plain_logits, logits[0]])
        self.model.restore((np.concatenate([hs, hp], axis=1), np.concatenate([cs, cp], axis=1)))
        np.copyto(self._plain, plain_logits[-1])
        self.styled = True
        out = styled_logits[0].copy()
        if self.strength() == 1.0:
            return out
        # Each position against the plain row after the same tokens less the style's: its last one so far.
        plain_at = np.cumsum([not self.vocab.is_style(t) for t in head])
        for i, j in enumerate(plain_at):
            self._mix(out[i], plain_logits[j], out[i])
        return out

    def snapshot(self) -> tuple[Any, bool, np.ndarray]:
        return self.model.snapshot(), self.styled, self._plain.copy()

    def restore(self, state: tuple[Any, bool, np.ndarray]) -> None:
        self.model.restore(state[0])
        self.styled = state[1]
        np.copyto(self._plain, state[2])
