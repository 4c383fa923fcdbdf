"""Session memory: what this player has played, as a variable-order Markov model learned live. Pure.

The LSTM knows the corpus it was trained on; the memory knows the session. It counts, for every
context of 1 to `max_order` tokens it has heard, which token came next, and predicts from the
longest context it has seen before, as Pachet's Continuator did, with the orders blended by
Witten-Bell interpolation: p_k(w | ctx) = (c(ctx, w) + T(ctx) p_{k-1}(w)) / (c(ctx) + T(ctx)), T the
number of distinct tokens seen after ctx, p_0 the counts of single tokens over a uniform floor.
A context is heard as classes of tokens (ContextClasses): time shifts in classes some 30 ms wide and
wider as they grow, velocities in four classes, notes exact; so a phrase played again a few
milliseconds or a little louder differently is the same context. What it predicts stays the exact
next token.

Its prediction is mixed with the LSTM's in probability space, with a weight for each length of the
longest context matched, learned as the session goes: where it is told how likely the LSTM found a
token the player then played, the weight of the order matched there moves toward whichever of the
two predicted it better (a gradient step on the mixture's log loss). It starts out growing with the
match length, since a long match usually means the player is repeating something; a piece in which
repeats are rare, or are varied, teaches it to leave the lead to the LSTM.

`attachment` says how much improv should follow the player: 0 not at all (the LSTM alone), 0.5 as
much as predicts the player best (the learned weights), 1 as much as the memory can give (wherever
it matched, its share grows with the match length up to MAX_WEIGHT, more than the learned weight
where the LSTM predicts the player well: improv quotes the player more than it has to).

It learns only what was heard: the engine teaches it committed tokens, never those a rollback dropped.
Its size is bounded: past `max_contexts`, the contexts heard least recently are forgotten first.
"""

from __future__ import annotations

import io
import json
import os
from collections import OrderedDict, deque
from itertools import islice
from pathlib import Path
from typing import Callable

import numpy as np

from improv.errors import ImprovError
from improv.midi.files import replace_file

MAX_ORDER = 6
MAX_CONTEXTS = 20_000  # bounded memory, yet minutes of playing before it forgets (sizes: docs/design.md)
FIRST_WEIGHT_PER_ORDER = 0.1  # each matched order's weight before the session has taught it anything
EAGER_WEIGHT_PER_ORDER = 0.2  # at attachment 1: the memory's share per matched token, up to MAX_WEIGHT
MAX_WEIGHT = 0.9  # the LSTM always keeps a share: the memory alone cannot produce what it never heard
BALANCED_ATTACHMENT = 0.5  # where the mix uses the learned weights as they are
WEIGHT_RATE = 0.02  # the step of the weights' gradient descent on the mix's log loss
FORMAT = "improv-session-memory-2"  # 2: contexts of classes (ContextClasses), saved with the classes
LONGEST_ORDER = 16  # a saved memory claiming longer contexts is not one of improv's
MAX_LOOKED_PAST = 2  # tokens the memory may look past to find one improv is allowed to play
FEW_TYPES = 6  # up to this many next tokens, a Python loop beats building arrays for them
SHIFT_RATIO = 1.5  # context classes: each class of time shift this many times as long as the one before
TOGETHER_STEPS = 3  # time shifts up to this many steps (30 ms) are one class: notes struck together
VELOCITY_CLASSES = 4  # the velocity bins, merged


def memory_path_for(recording: str | os.PathLike) -> Path:
    """A session's memory file lies beside its recording: NAME.mid -> NAME.memory.npz."""
    return Path(recording).with_suffix(".memory.npz")


def load_or_empty(path: str | os.PathLike, vocab_spec: str, vocab_size: int, max_contexts: int,
                  warn: Callable[[str], None], classes: "ContextClasses | None" = None) -> "SessionMemory":
    """A saved memory, or, when the file cannot be used, an empty one (hearing contexts as `classes`)
    and one line through `warn` saying why: a set does not fail to start over a memory."""
    try:
        return SessionMemory.load(path, vocab_spec, vocab_size, max_contexts)
    except MemoryFileError as err:
        warn(f"{err}; starting with an empty session memory")
        return SessionMemory(vocab_size, max_contexts=max_contexts, classes=classes)


class MemoryFileError(ImprovError, ValueError):
    """A memory file cannot be read, or was made for another vocabulary."""


class ContextClasses:
    """How the memory hears a context: each token as its class, so that a phrase played again a few
    milliseconds or a little louder or softer is the same context. `of[token]` is the class, as the
    id of a token standing for it, so contexts stay tuples of token ids. What the memory predicts
    stays the exact next token: only the contexts it is predicted from are classed."""

    def __init__(self, of):
        self.of = np.asarray(of, dtype=np.int32)
        if self.of.ndim != 1:
            raise ValueError("one class for every token")
        self._of = self.of.tolist()  # a Python list: faster to index one token at a time

    @classmethod
    def exact(cls, vocab_size: int) -> "ContextClasses":
        """Every token its own class: contexts of exact tokens."""
        return cls(np.arange(vocab_size))

    @classmethod
    def for_vocab(cls, vocab, shift_ratio: float = SHIFT_RATIO, together_steps: int = TOGETHER_STEPS,
                  velocity_classes: int = VELOCITY_CLASSES) -> "ContextClasses":
        """Classes of an event vocabulary (improv.events.Vocabulary): time shifts up to
        `together_steps` are one class (notes struck together, give or take a player's spread), the
        next class as wide, and each class after it `shift_ratio` times as long as the one before
        (a player's timing varies with the length of what they play); the velocity bins merged into
        `velocity_classes`; notes (note-ons and note-offs) exact."""
        of = np.arange(vocab.size)
        shifts, steps = vocab.offset("TIME_SHIFT"), vocab.time_shift_steps
        bounds = [together_steps, 2 * together_steps]
        while bounds[-1] < steps:
            bounds.append(bounds[-1] * shift_ratio)
        bucket = np.searchsorted(np.array(bounds), np.arange(1, steps + 1) - 1e-9)  # a shift on a bound: below it
        of[shifts : shifts + steps] = shifts + np.searchsorted(bucket, bucket)  # each class: its shortest shift
        velocities, bins = vocab.offset("VELOCITY"), vocab.velocity_bins
        merged = np.arange(bins) * velocity_classes // bins
        of[velocities : velocities + bins] = velocities + np.searchsorted(merged, merged)
        return cls(of)

    def key(self, context, order: int) -> tuple[int, ...]:
        """The classes of the last `order` tokens of `context` (the most recent last)."""
        if order <= 0:
            return ()
        of = self._of
        if not hasattr(context, "__len__"):
            context = tuple(context)
        skipped = len(context) - order
        # A list comprehension over the tokens in place (a deque is not sliced): half the cost of a
        # generator over a copied tuple, paid by every look-up of a mix and a learn.
        return tuple([of[token] for token in (islice(context, skipped, None) if skipped > 0 else context)])


class SessionMemory:
    def __init__(self, vocab_size: int, max_order: int = MAX_ORDER, max_contexts: int = MAX_CONTEXTS,
                 classes: ContextClasses | None = None):
        """`classes`: what a context is made of (ContextClasses.for_vocab(vocab) in improv); None: exact tokens."""
        self.vocab_size, self.max_order, self.max_contexts = vocab_size, max_order, max_contexts
        self.classes = ContextClasses.exact(vocab_size) if classes is None else classes
        if len(self.classes.of) != vocab_size:
            raise ValueError(f"context classes for {len(self.classes.of)} tokens, not {vocab_size}")
        self.clear()

    def clear(self) -> None:
        """Forget everything: a new piece."""
        self.unigram = np.zeros(self.vocab_size, np.float64)
        self.unigram_types = 0  # distinct tokens heard: T of the order-0 context
        # context (tuple of classes) -> [count of the context, {next token: count}], least recently heard first
        self.contexts: OrderedDict[tuple[int, ...], list] = OrderedDict()
        self.recent: deque[int] = deque(maxlen=self.max_order)  # the last tokens learned
        self.tokens_learned = 0
        self._order_0: np.ndarray | None = None  # the order-0 prediction, until the next token is learned
        # The memory's share of the mix for each longest matched order 0..max_order (attachment 1).
        self.weights = np.minimum(MAX_WEIGHT, FIRST_WEIGHT_PER_ORDER * np.arange(self.max_order + 1))

    def __len__(self) -> int:
        return len(self.contexts)

    # -- learning -------------------------------------------------------------------------------
    def learn(self, token: int, p_model: float | None = None) -> None:
        """Hear one more token of the session. `p_model`, when known, is the probability the LSTM gave
        this token just before it: the weight of the order the memory matched here learns from it."""
        if p_model is not None:
            self._learn_weight(token, p_model)
        recent = self.classes.key(self.recent, self.max_order)
        # Longest first: each shorter context is then heard more recently than the longer ones that end
        # in it, so eviction never keeps a context whose suffix is gone (predict could not reach it).
        for order in range(len(recent), 0, -1):
            context = recent[-order:]
            entry = self.contexts.get(context)
            if entry is None:
                entry = self.contexts[context] = [0, {}]
            else:
                self.contexts.move_to_end(context)
            entry[0] += 1
            entry[1][token] = entry[1].get(token, 0) + 1
        while len(self.contexts) > self.max_contexts:
            self.contexts.popitem(last=False)
        if self.unigram[token] == 0:
            self.unigram_types += 1
        self.unigram[token] += 1
        self.recent.append(token)
        self.tokens_learned += 1
        self._order_0 = None

    def learn_all(self, tokens) -> None:
        for token in tokens:
            self.learn(int(token))

    def _learn_weight(self, token: int, p_model: float) -> None:
        p_memory, matched = self.predict(self.recent)
        w = self.weights[matched]
        p_mix = (1 - w) * p_model + w * p_memory[token]
        if p_mix > 0:
            step = WEIGHT_RATE * (p_memory[token] - p_model) / p_mix
            self.weights[matched] = min(MAX_WEIGHT, max(0.0, w + step))

    # -- predicting -----------------------------------------------------------------------------
    def predict(self, context) -> tuple[np.ndarray, int]:
        """(next-token probabilities (V,), the longest order matched) after `context`, the tokens
        heard last (the most recent last; only its last `max_order` classes count)."""
        if self._order_0 is None:
            total, types = self.tokens_learned, self.unigram_types
            self._order_0 = (self.unigram + types / self.vocab_size) / max(1, total + types)
            if total == 0:
                self._order_0[:] = 1.0 / self.vocab_size
        p = self._order_0.copy()
        context = self.classes.key(context, self.max_order)
        matched = 0
        for order in range(1, len(context) + 1):
            entry = self.contexts.get(context[-order:])
            if entry is None:
                break  # a longer context ends in this one: it cannot have been heard either
            count, following = entry
            distinct = len(following)
            p *= distinct / (count + distinct)
            if distinct <= FEW_TYPES:
                for token, seen in following.items():
                    p[token] += seen / (count + distinct)
            else:
                tokens = np.fromiter(following.keys(), np.intp, distinct)
                p[tokens] += np.fromiter(following.values(), np.float64, distinct) / (count + distinct)
            matched = order
        return p, matched

    def longest_match(self, context) -> int:
        """The longest order of `context` the memory has heard (dictionary look-ups only)."""
        context = self.classes.key(context, self.max_order)
        matched = 0
        for order in range(1, len(context) + 1):
            if context[-order:] not in self.contexts:
                break
            matched = order
        return matched

    def weight(self, matched_order: int, attachment: float) -> float:
        """How much of the mix is the memory's, after a match of `matched_order` tokens: from none at
        attachment 0 to the learned weight at 0.5, and on to the eager weight (or the learned one,
        if larger) at 1."""
        learned = float(self.weights[matched_order])
        if attachment <= BALANCED_ATTACHMENT:
            return attachment / BALANCED_ATTACHMENT * learned
        eager = min(MAX_WEIGHT, EAGER_WEIGHT_PER_ORDER * matched_order)
        beyond = (attachment - BALANCED_ATTACHMENT) / (1 - BALANCED_ATTACHMENT)
        return learned + beyond * max(0.0, eager - learned)

    def mix(self, logits: np.ndarray, context, attachment: float, allowed: np.ndarray | None = None,
            look_past: bool = False) -> tuple[np.ndarray, tuple[int, ...]]:
        """(the LSTM's next-token logits mixed with the memory's prediction, the tokens the memory
        looked past). The mix is logits again (log probabilities), so temperature, top-p and masks
        apply to it as they did to the LSTM. With `allowed` (a boolean mask of the tokens that may
        come next), each side's prediction is taken among those tokens before they are mixed. With
        `look_past`, where the player went on with a token improv may not play now (a short pause
        where improv must begin with a note, the note-off of a note improv does not sound), the memory
        looks past it to what the player played after it; the caller adds the tokens looked past to
        the memory's context (only), so the match goes on. Without it, the weight is found first by
        dictionary look-ups, and a memory with no say costs no array work."""
        if attachment <= 0 or self.tokens_learned == 0:
            return logits, ()
        if not look_past and self.weight(self.longest_match(context), attachment) <= 0:
            return logits, ()  # no say: no arrays
        p_memory, matched = self.predict(context)
        looked_past: tuple[int, ...] = ()
        if allowed is not None and look_past:
            context = tuple(context)
            while len(looked_past) < MAX_LOOKED_PAST:
                token = int(np.argmax(p_memory))
                if allowed[token]:
                    break
                p_after, matched_after = self.predict((*context, *looked_past, token))
                if matched_after == 0:
                    break
                p_memory, matched, looked_past = p_after, matched_after, (*looked_past, token)
        w = self.weight(matched, attachment)
        if w <= 0:
            return logits, ()
        if allowed is not None:
            logits = np.where(allowed, logits, -np.inf)  # before the max: the allowed tokens' own scale
            p_memory *= allowed
        p_model = np.exp(logits - logits.max())
        p_model *= (1 - w) / p_model.sum()
        p_model += p_memory * (w / p_memory.sum())
        with np.errstate(divide="ignore"):  # masked tokens weigh 0: log 0 is -inf, as a mask makes it
            return np.log(p_model, dtype=np.float32), looked_past

    # -- keeping it between sessions ------------------------------------------------------------
    def save(self, path: str | os.PathLike, vocab_spec: str) -> None:
        """Write the memory (with the vocabulary it was learned in) atomically."""
        rows = [(*context, *([-1] * (self.max_order - len(context))), token, seen)
                for context, (_, following) in self.contexts.items() for token, seen in following.items()]
        table = np.array(rows, dtype=np.int32).reshape(-1, self.max_order + 2)
        header = json.dumps({"format": FORMAT, "vocab": vocab_spec, "max_order": self.max_order,
                             "recent": list(self.recent)})
        buffer = io.BytesIO()
        np.savez_compressed(buffer, header=np.array(header), table=table, unigram=self.unigram, weights=self.weights,
                            context_classes=self.classes.of)
        replace_file(Path(path), [buffer.getbuffer()])

    @classmethod
    def load(cls, path: str | os.PathLike, vocab_spec: str, vocab_size: int,
             max_contexts: int = MAX_CONTEXTS) -> "SessionMemory":
        """A saved memory, hearing contexts as the classes it was learned with (saved with it);
        MemoryFileError saying what is wrong with an unreadable or foreign file."""
        try:
            data = np.load(path, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("a single array, not an archive")
            with data:
                header, table, unigram = json.loads(str(data["header"])), data["table"], data["unigram"]
                weights = data["weights"]
                of = data["context_classes"] if "context_classes" in data.files else None
        except FileNotFoundError as err:
            raise MemoryFileError(f"memory file {path} does not exist") from err
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
            raise MemoryFileError(f"{path} is not an improv session memory ({err})") from err
        if isinstance(header, dict) and str(header.get("format", "")).startswith(FORMAT.rpartition("-")[0] + "-") \
                and header.get("format") != FORMAT:
            raise MemoryFileError(f"{path} was saved by another version of improv (a {header['format']} file; "
                                  f"this one reads {FORMAT})")
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise MemoryFileError(f"{path} is not an improv session memory (no {FORMAT} header)")
        if header.get("vocab") != vocab_spec or unigram.shape != (vocab_size,):
            raise MemoryFileError(f"{path} was learned with another model's vocabulary")
        max_order, recent = header.get("max_order"), header.get("recent", [])
        if (not isinstance(max_order, int) or not 0 <= max_order <= LONGEST_ORDER or table.ndim != 2
                or table.shape[1] != max_order + 2 or weights.shape != (max_order + 1,)
                or not _tokens_in_range(table[:, :-2], vocab_size, allow_padding=True)
                or not _tokens_in_range(table[:, -2], vocab_size)
                or not _tokens_in_range(np.asarray(recent, dtype=np.int64), vocab_size)
                or (table[:, -1] <= 0).any() or (unigram < 0).any() or not np.isfinite(weights).all()
                or of is None or of.shape != (vocab_size,) or not _tokens_in_range(of, vocab_size)):
            raise MemoryFileError(f"{path} is a damaged improv session memory; start without it or from another")
        memory = cls(vocab_size, max_order, max_contexts, ContextClasses(of))
        memory.unigram[:] = unigram
        memory._order_0 = None
        memory.weights[:] = weights
        memory.unigram_types = int(np.count_nonzero(unigram))
        for row in table.tolist():
            context = tuple(t for t in row[: memory.max_order] if t >= 0)
            entry = memory.contexts.setdefault(context, [0, {}])
            entry[0] += row[-1]
            entry[1][row[-2]] = row[-1]
        while len(memory.contexts) > memory.max_contexts:  # a larger file is cut now, not on the first note
            memory.contexts.popitem(last=False)
        memory.recent.extend(recent)
        memory.tokens_learned = int(unigram.sum())
        return memory


def _tokens_in_range(tokens: np.ndarray, vocab_size: int, allow_padding: bool = False) -> bool:
    low = -1 if allow_padding else 0
    return bool(((tokens >= low) & (tokens < vocab_size)).all())
