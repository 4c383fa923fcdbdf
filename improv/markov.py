"""A variable-order Markov baseline over event tokens, in the manner of Pachet's Continuator.

The Continuator predicts from the longest context it has seen before. To give it a loss in bits per
token that can stand beside the LSTM's, every order from 0 to `max_order` is blended by Witten-Bell
interpolation: p_k(w | ctx) = (c(ctx, w) + T(ctx) p_{k-1}(w)) / (c(ctx) + T(ctx)), with T the number
of distinct tokens seen after ctx. An unseen context falls back to the shorter one.

Counts live in sorted numpy arrays (exact context keys, a base-(V+1) number of the context), so the
file is compact, loads without the training extras, and scoring is vectorised per order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from improv.errors import ModelError

MAX_EXACT_ORDER = 7  # 391**7 < 2**64: contexts up to 7 tokens have exact, collision-free keys


def _context_keys(tokens: np.ndarray, order: int, base: int) -> np.ndarray:
    """Key of the `order` tokens before each position i >= order (positions order..n-1)."""
    n = len(tokens)
    keys = np.zeros(n - order, dtype=np.uint64)
    for j in range(order):
        keys = keys * np.uint64(base) + tokens[j : n - order + j].astype(np.uint64) + np.uint64(1)
    return keys


@dataclass
class OrderTable:
    context_keys: np.ndarray  # (C,) uint64, sorted
    context_total: np.ndarray  # (C,) int64: c(ctx)
    context_types: np.ndarray  # (C,) int64: T(ctx)
    pair_keys: np.ndarray  # (P,) int64 sorted: context index * V + next token
    pair_count: np.ndarray  # (P,) int32


class MarkovModel:
    def __init__(self, vocab_size: int, unigram: np.ndarray, tables: list[OrderTable]):
        self.vocab_size = vocab_size
        self.unigram = unigram  # (V,) counts
        self.tables = tables  # tables[k - 1] holds order k

    @property
    def max_order(self) -> int:
        return len(self.tables)

    @classmethod
    def train(cls, sequences: list[np.ndarray], vocab_size: int, max_order: int = 5, min_count: int = 2) -> "MarkovModel":
        """Count every context of 1..max_order tokens; at orders >= 2, drop pairs seen fewer than
        `min_count` times (the pruning that keeps the file small)."""
        assert 1 <= max_order <= MAX_EXACT_ORDER
        base = vocab_size + 1
        unigram = np.zeros(vocab_size, dtype=np.int64)
        for seq in sequences:
            unigram += np.bincount(seq, minlength=vocab_size)
        tables = []
        for order in range(1, max_order + 1):
            contexts, nexts = [], []
            for seq in sequences:
                seq = np.asarray(seq, dtype=np.int64)
                if len(seq) > order:
                    contexts.append(_context_keys(seq, order, base))
                    nexts.append(seq[order:])
            tables.append(cls._table(np.concatenate(contexts), np.concatenate(nexts), vocab_size,
                                     min_count if order >= 2 else 1))
        return cls(vocab_size, unigram, tables)

    @staticmethod
    def _table(contexts: np.ndarray, nexts: np.ndarray, vocab_size: int, min_count: int) -> OrderTable:
        order = np.lexsort((nexts, contexts))
        contexts, nexts = contexts[order], nexts[order]
        boundary = np.ones(len(contexts), dtype=bool)
        boundary[1:] = (contexts[1:] != contexts[:-1]) | (nexts[1:] != nexts[:-1])
        starts = np.flatnonzero(boundary)
        counts = np.diff(np.append(starts, len(contexts)))
        pair_ctx, pair_next = contexts[starts], nexts[starts]
        keep = counts >= min_count
        pair_ctx, pair_next, counts = pair_ctx[keep], pair_next[keep], counts[keep]
        context_keys, context_index, context_types = np.unique(pair_ctx, return_inverse=True, return_counts=True)
        context_total = np.bincount(context_index, weights=counts, minlength=len(context_keys)).astype(np.int64)
        return OrderTable(context_keys, context_total, context_types.astype(np.int64),
                          context_index.astype(np.int64) * vocab_size + pair_next, counts.astype(np.int32))

    def probabilities(self, tokens: np.ndarray) -> np.ndarray:
        """p(tokens[i] | tokens[:i]) for i = 1..n-1."""
        tokens = np.asarray(tokens, dtype=np.int64)
        targets = tokens[1:]
        p = (self.unigram[targets] + 1.0) / (self.unigram.sum() + self.vocab_size)
        base = self.vocab_size + 1
        for order, table in enumerate(self.tables, start=1):
            if len(tokens) <= order or len(table.context_keys) == 0:
                break
            keys = _context_keys(tokens, order, base)  # context tokens[i-order:i] of each target i >= order
            index = np.searchsorted(table.context_keys, keys)
            index_clipped = np.minimum(index, len(table.context_keys) - 1)
            found = table.context_keys[index_clipped] == keys
            total = np.where(found, table.context_total[index_clipped], 0).astype(np.float64)
            types = np.where(found, table.context_types[index_clipped], 0).astype(np.float64)
            pair = index_clipped * self.vocab_size + tokens[order:]
            pair_index = np.minimum(np.searchsorted(table.pair_keys, pair), len(table.pair_keys) - 1)
            count = np.where(found & (table.pair_keys[pair_index] == pair), table.pair_count[pair_index], 0)
            lower = p[order - 1 :]
            blended = (count + types * lower) / np.maximum(total + types, 1.0)
            p[order - 1 :] = np.where(found, blended, lower)
        return p

    def bits(self, tokens: np.ndarray) -> tuple[float, int]:
        """Total bits and the number of predicted tokens."""
        if len(tokens) < 2:
            return 0.0, 0
        return float(-np.log2(self.probabilities(tokens)).sum()), len(tokens) - 1

    # -- file -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        arrays = {"vocab_size": np.array(self.vocab_size), "unigram": self.unigram}
        for order, table in enumerate(self.tables, start=1):
            for name, value in table.__dict__.items():
                arrays[f"o{order}_{name}"] = value
        tmp = f"{path}.tmp.npz"
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "MarkovModel":
        try:
            with np.load(path) as data:
                vocab_size = int(data["vocab_size"])
                tables, order = [], 1
                while f"o{order}_context_keys" in data:
                    tables.append(OrderTable(*(data[f"o{order}_{name}"] for name in OrderTable.__dataclass_fields__)))
                    order += 1
                return cls(vocab_size, data["unigram"], tables)
        except FileNotFoundError as err:
            raise ModelError(f"Markov baseline {path} does not exist; export the model with training/export.py to make it") from err
        except (OSError, ValueError, KeyError) as err:
            raise ModelError(f"Markov baseline {path} is not readable ({err}); export the model again") from err
