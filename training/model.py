"""The stateful LSTM that the daemon steps live, and a windowed BiLSTM kept for comparison."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class ModelConfig:
    vocab_size: int = 390
    embed_dim: int = 256
    hidden: int = 512
    layers: int = 2
    dropout: float = 0.1  # between LSTM layers and before the output layer

    def to_dict(self) -> dict:
        return asdict(self)


class EventLSTM(nn.Module):
    """tokens (B, T) and state (layers, B, H) -> logits (B, T, V) and the next state.

    Tokens go through an embedding (never a pitch scaled to a float). Stepping T = 1 with the
    state carried is exactly what running the whole sequence does: that is what the daemon relies on.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim)
        self.lstm = nn.LSTM(config.embed_dim, config.hidden, config.layers, batch_first=True,
                            dropout=config.dropout if config.layers > 1 else 0.0)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.vocab_size)

    def initial_state(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (self.config.layers, batch, self.config.hidden)
        device = self.head.weight.device  # the model's own device: a GPU run keeps its state there
        return torch.zeros(shape, device=device), torch.zeros(shape, device=device)

    def forward(self, tokens: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor):
        x = self.embed(tokens)  # (B, T, E)
        y, (hn, cn) = self.lstm(x, (h0, c0))  # (B, T, H)
        logits = self.head(self.drop(y))  # (B, T, V)
        return logits, hn, cn


class WindowBiLSTM(nn.Module):
    """The variant an original project used: a bidirectional LSTM reads the last N events and
    predicts the next. It must re-read the whole window for every note, so it cannot be stepped live;
    it is here so its held-out loss can stand beside the stateful model's.
    """

    def __init__(self, vocab_size: int, window: int = 32, embed_dim: int = 128, hidden: int = 256):
        super().__init__()
        self.window = window
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden, 1, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, vocab_size)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """windows (B, N) -> logits (B, V) for the token after each window."""
        y, _ = self.lstm(self.embed(windows))  # (B, N, 2H)
        hidden = self.lstm.hidden_size
        summary = torch.cat([y[:, -1, :hidden], y[:, 0, hidden:]], dim=-1)  # forward end, backward end
        return self.head(summary)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
