"""The model edge: an exported LSTM run by onnxruntime, stepped one token at a time.

The contract (docs/design.md): inputs `tokens` int64 [batch, time], `h0`/`c0` float32 [layers, batch,
hidden]; outputs `logits` [batch, time, vocab], `hn`/`cn`. The vocabulary spec and the training facts
travel in the file's metadata. The live step uses IOBinding over preallocated buffers: the state
ping-pongs between two buffer pairs, so a step allocates nothing and copies nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from improv.errors import ModelError, ModelSpecError
from improv.events import Vocabulary

VOCAB_KEY = "improv.vocab"
FACTS_KEY = "improv.facts"
INPUTS = ("tokens", "h0", "c0")
OUTPUTS = ("logits", "hn", "cn")
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "exported_models"
# int8 first: it steps faster at the same held-out loss (docs/performance.md, the model card).
SHIPPED_NAMES = ("improv-lstm.int8.onnx", "improv-lstm.onnx")
# A heard note is 2-3 tokens (time shift, velocity when it changed, note), on the path from the
# player's note to improv's: these lengths are primed through bound buffers like the step, which
# allocates nothing, where a plain run() allocates its inputs and outputs on every call.
BOUND_PRIME_LENGTHS = (2, 3, 4)


def default_model_path() -> Path:
    """The shipped model: beside the package in a checkout, or where the wheel put it."""
    for folder in (SHIPPED_DIR, Path(__file__).resolve().parent / "exported_models"):
        for name in SHIPPED_NAMES:
            if (folder / name).exists():
                return folder / name
    return SHIPPED_DIR / SHIPPED_NAMES[0]


def model_styles(path: str | os.PathLike) -> tuple[str, ...]:
    """The styles a model file lists in its vocabulary metadata (none for a model without styles)."""
    import onnxruntime as ort

    try:
        meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta()
        return Vocabulary.from_json(meta.custom_metadata_map[VOCAB_KEY]).styles
    except Exception:  # not an improv model: it has no styles to list (loading it says why)
        return ()


def open_stepped(path: str | os.PathLike | None, style_strength: Callable[[], float]):
    """The model the engine steps: a model with styles under style guidance (improv.guidance), its two
    contexts stepped as two rows; a model without styles as it is. `style_strength()` is read live."""
    from improv.guidance import StyleGuidance

    model = OnnxModel(path)
    if not model.vocab.styles:
        return model
    model.use_rows(2)
    return StyleGuidance(model, style_strength)


class OnnxModel:
    """One context, or after `use_rows(n)` n contexts stepped side by side in one call (a batch): the
    same token goes to each row, whose states may differ (improv.guidance keeps a styled and a plain
    row). Two rows cost what one does: a step reads the weights once either way (docs/performance.md)."""

    def __init__(self, path: str | os.PathLike | None = None, threads: int = 1):
        import onnxruntime as ort  # the only onnxruntime import: the runtime edge

        self.rows = 1
        self.path = Path(path) if path is not None else default_model_path()
        if self.path.is_dir():
            onnx_files = sorted(p.name for p in self.path.glob("*.onnx"))
            hint = f" (it holds {', '.join(onnx_files)})" if onnx_files else ""
            raise ModelError(f"model {self.path} is a folder, not a model file{hint}; pass --model PATH to an "
                             f"exported .onnx file")
        if not self.path.is_file():
            raise ModelError(f"model file {self.path} does not exist; pass --model PATH to an exported .onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # one thread: a second collapses the tail on a busy core
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own untyped errors for a broken file
            raise ModelError(f"{self.path} is not a loadable ONNX model ({str(err).splitlines()[0][:200]})") from err
        self._check_contract()
        meta = self.session.get_modelmeta().custom_metadata_map
        if VOCAB_KEY not in meta:
            raise ModelSpecError(f"{self.path} has no '{VOCAB_KEY}' metadata: it was not exported by improv's training/export.py")
        self.vocab = Vocabulary.from_json(meta[VOCAB_KEY])
        self.facts = json.loads(meta.get(FACTS_KEY, "{}"))
        if self.vocab_size != self.vocab.size:
            raise ModelSpecError(f"{self.path}: logits have {self.vocab_size} entries but the vocabulary spec has {self.vocab.size}")
        self._allocate()

    def _check_contract(self) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        if set(inputs) != set(INPUTS) or set(outputs) != set(OUTPUTS):
            raise ModelError(f"{self.path} has inputs {sorted(inputs)} and outputs {sorted(outputs)}; an improv model "
                             f"has inputs {list(INPUTS)} and outputs {list(OUTPUTS)}")
        layers, _, hidden = inputs["h0"].shape
        vocab = outputs["logits"].shape[-1]
        if not all(isinstance(d, int) for d in (layers, hidden, vocab)):
            raise ModelError(f"{self.path}: layers, hidden size and vocabulary must be fixed dimensions")
        self.layers, self.hidden, self.vocab_size = layers, hidden, vocab

    def use_rows(self, rows: int) -> None:
        """Step `rows` contexts side by side from now on, all at the zero state."""
        self.rows = rows
        self._allocate()

    def _allocate(self) -> None:
        shape = (self.layers, self.rows, self.hidden)
        self._h = [np.zeros(shape, np.float32), np.zeros(shape, np.float32)]
        self._c = [np.zeros(shape, np.float32), np.zeros(shape, np.float32)]
        self._token, self._logits, self._bindings = self._bound(1)
        self._primes = {length: self._bound(length) for length in BOUND_PRIME_LENGTHS}
        self._current = 0  # index of the buffer pair that holds the current state

    def _bound(self, length: int):
        """Token and logits buffers for `length` tokens, and a binding each way between the state pairs."""
        tokens = np.zeros((self.rows, length), dtype=np.int64)
        logits = np.zeros((self.rows, length, self.vocab_size), np.float32)
        return tokens, logits, [self._bind(0, 1, tokens, logits), self._bind(1, 0, tokens, logits)]

    def _bind(self, src: int, dst: int, tokens: np.ndarray, logits: np.ndarray):
        binding = self.session.io_binding()
        shape = self._h[0].shape
        binding.bind_input("tokens", "cpu", 0, np.int64, tokens.shape, tokens.ctypes.data)
        binding.bind_input("h0", "cpu", 0, np.float32, shape, self._h[src].ctypes.data)
        binding.bind_input("c0", "cpu", 0, np.float32, shape, self._c[src].ctypes.data)
        binding.bind_output("logits", "cpu", 0, np.float32, logits.shape, logits.ctypes.data)
        binding.bind_output("hn", "cpu", 0, np.float32, shape, self._h[dst].ctypes.data)
        binding.bind_output("cn", "cpu", 0, np.float32, shape, self._c[dst].ctypes.data)
        return binding

    # -- the live path ------------------------------------------------------------------------
    def step(self, token: int) -> np.ndarray:
        """Feed one token; returns the next-token logits (a view, valid until the next step): (V,) for
        one row, (rows, V) for several."""
        self._token[:, 0] = token
        self.session.run_with_iobinding(self._bindings[self._current])
        self._current ^= 1
        return self._logits[0, 0] if self.rows == 1 else self._logits[:, 0]

    def reset(self) -> None:
        for buffer in self._h + self._c:
            buffer.fill(0.0)
        self._current = 0

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        return self._h[self._current].copy(), self._c[self._current].copy()

    def restore(self, state: tuple[np.ndarray, np.ndarray]) -> None:
        np.copyto(self._h[self._current], state[0])
        np.copyto(self._c[self._current], state[1])

    # -- whole sequences (priming, evaluation) ------------------------------------------------
    def run(self, tokens: np.ndarray, state: tuple[np.ndarray, np.ndarray] | None = None):
        """tokens (B, T) -> logits (B, T, V), (hn, cn); state defaults to zeros."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if state is None:
            zeros = np.zeros((self.layers, tokens.shape[0], self.hidden), np.float32)
            state = (zeros, zeros)
        logits, hn, cn = self.session.run(list(OUTPUTS), {"tokens": tokens, "h0": state[0], "c0": state[1]})
        return logits, (hn, cn)

    def prime(self, tokens: list[int]) -> np.ndarray:
        """Feed a whole sequence in one call and keep its final state; returns the logits after each
        token, (len(tokens), V) for one row, (rows, len(tokens), V) for several (a view, valid until the
        next prime of this length)."""
        bound = self._primes.get(len(tokens))
        if bound is None:
            logits, state = self.run(np.tile(np.array(tokens, dtype=np.int64), (self.rows, 1)), self.snapshot())
            self.restore(state)
        else:
            token_buffer, logits, bindings = bound
            token_buffer[:] = tokens
            self.session.run_with_iobinding(bindings[self._current])
            self._current ^= 1
        return logits[0] if self.rows == 1 else logits
