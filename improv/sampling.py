"""Choosing the next token: masks, temperature and nucleus (top-p) sampling. Pure numpy."""

from __future__ import annotations

import numpy as np

from improv.events import NUM_PITCHES, Vocabulary


def sample(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator,
           allowed: np.ndarray | None = None) -> int:
    """One token id from `logits` (V,). `allowed` is a boolean mask; at least one must be True.

    temperature -> 0 approaches argmax; top_p keeps the smallest set of tokens whose probability
    reaches top_p (1.0 keeps all). Float32 and unnormalised weights throughout: this runs once a
    token on the live path, so it makes as few numpy calls as it can.
    """
    weights = np.where(allowed, logits, -np.inf) if allowed is not None else logits.astype(np.float32)
    weights *= np.float32(1.0 / max(temperature, 1e-6))
    weights -= weights.max()
    np.exp(weights, out=weights)  # unnormalised probabilities; masked tokens weigh 0
    if top_p >= 1.0:
        cumulative = np.cumsum(weights)
        return int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    order = np.argsort(weights)[::-1]
    cumulative = np.cumsum(weights[order])
    cut = int(np.searchsorted(cumulative, top_p * cumulative[-1]))  # the nucleus is order[: cut + 1]
    pick = int(np.searchsorted(cumulative[: cut + 1], rng.random() * cumulative[cut], side="right"))
    return int(order[min(pick, cut)])


class MaskBuilder:
    """Which tokens improv may play next, given its limits and what it is sounding.

    - specials (PAD, START) never, nor STYLE tokens (a style is chosen, never generated);
    - NOTE_ON only within [pitch_low, pitch_high] and while fewer than max_polyphony notes sound;
    - NOTE_OFF only for notes improv itself is sounding (`releasable`: those that have sounded for
      at least a time step, so no note is inaudibly short);
    - with a key (`set_key`), NOTE_ON only for pitches in it, unless none in the key is otherwise
      allowed (a pitch range with no note of the key: improv plays rather than stall);
    - `onset_now`: at the start of an answer, nothing but VELOCITY and NOTE_ON, so the first note
      sounds at once instead of after a model-chosen pause; with `velocity_first` off, NOTE_ON only
      (the note takes the velocity last heard), which saves a model step before it.
    """

    def __init__(self, vocab: Vocabulary):
        self.vocab = vocab
        self.on, self.off = vocab.offset("NOTE_ON"), vocab.offset("NOTE_OFF")
        self.base = np.ones(vocab.size, dtype=bool)
        for name in vocab.specials:
            self.base[vocab.special(name)] = False
        if vocab.styles:
            self.base[vocab.offset("STYLE") : vocab.offset("STYLE") + len(vocab.styles)] = False
        self.base[self.off : self.off + NUM_PITCHES] = False  # opened per sounding note
        self.onset_only = np.zeros(vocab.size, dtype=bool)
        self.onset_only[self.on : self.on + NUM_PITCHES] = True
        self.note_only = self.onset_only.copy()
        velocity = vocab.offset("VELOCITY")
        self.onset_only[velocity : velocity + vocab.velocity_bins] = True
        self._onset_masks: dict[tuple, np.ndarray] = {}
        self.pitch_low = self.pitch_high = -1
        self.in_key: np.ndarray | None = None  # per MIDI pitch: in the key
        self.key_pitch_classes: frozenset[int] | None = None
        self.set_range(0, NUM_PITCHES - 1)
        self._mask = np.empty(vocab.size, dtype=bool)

    def set_range(self, pitch_low: int, pitch_high: int) -> None:
        if (pitch_low, pitch_high) != (self.pitch_low, self.pitch_high):
            self._onset_masks = {}  # kept for one range at a time: a controller can move it anywhere
        self.pitch_low, self.pitch_high = pitch_low, pitch_high

    def set_key(self, pitch_classes: frozenset[int] | None) -> None:
        """Keep NOTE_ONs to these pitch classes (0 = C); None: every pitch."""
        if pitch_classes == self.key_pitch_classes:
            return
        self._onset_masks = {}
        self.key_pitch_classes = pitch_classes
        self.in_key = (None if pitch_classes is None
                       else np.array([p % 12 in pitch_classes for p in range(NUM_PITCHES)], dtype=bool))

    def build(self, sounding, max_polyphony: int, onset_now: bool = False, releasable=None,
              velocity_first: bool = True) -> np.ndarray:
        """The mask (valid until the next build; do not write to it)."""
        if onset_now:
            # Kept, not rebuilt: an onset is often the first thing improv does after idling, when
            # each numpy call costs tens of microseconds on cold caches.
            key = (velocity_first, len(sounding) >= max_polyphony)
            if key not in self._onset_masks:
                self._onset_masks[key] = self._build(sounding, max_polyphony, True, (), velocity_first).copy()
            return self._onset_masks[key]
        return self._build(sounding, max_polyphony, False, releasable, velocity_first)

    def _build(self, sounding, max_polyphony: int, onset_now: bool, releasable, velocity_first: bool) -> np.ndarray:
        mask = self._mask
        np.copyto(mask, (self.onset_only if velocity_first else self.note_only) if onset_now else self.base)
        on = self.on
        mask[on : on + self.pitch_low] = False
        mask[on + self.pitch_high + 1 : on + NUM_PITCHES] = False
        if len(sounding) >= max_polyphony:
            mask[on : on + NUM_PITCHES] = False
        if self.in_key is not None:
            notes = mask[on : on + NUM_PITCHES]
            keyed = notes & self.in_key
            if keyed.any() or not notes.any():
                notes[:] = keyed
        if not onset_now:
            for pitch in sounding if releasable is None else releasable:
                mask[self.off + pitch] = True
        if not mask.any():  # nothing playable: let time pass rather than fail
            mask[self.vocab.time_shift(1)] = True
        return mask
