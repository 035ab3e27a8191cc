"""DynamicRegress Siamese LSTM (paper §III-C), split as encoder + head for export.

Encoder: two stacked single-layer LSTMs (equivalent to nn.LSTM(num_layers=2); stacked
so that the ONNX export runs in tract at any batch, see DESIGN.md), Z = last hidden state
of the second layer. Head: softmax(W·|Z1 − Z2| + b); column 1 = P(regression).
"""
import torch
from torch import nn


class Encoder(nn.Module):
    def __init__(self, hidden: int = 32, inputs: int = 2):
        super().__init__()
        self.lstm1 = nn.LSTM(inputs, hidden, batch_first=True)
        self.lstm2 = nn.LSTM(hidden, hidden, batch_first=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is None:  # export / inference: equal-length batch
            y, _ = self.lstm1(x)
            _, (h, _) = self.lstm2(y)
            return h[-1]
        # Right-padded batch: the LSTM is causal, so the output at step len-1 is exactly
        # the last hidden state of the unpadded sequence (and 10x faster on CPU than
        # packed sequences).
        y, _ = self.lstm1(x)
        y, _ = self.lstm2(y)
        return y[torch.arange(len(lengths), device=y.device), lengths - 1]


class Head(nn.Module):
    def __init__(self, hidden: int = 32):
        super().__init__()
        self.fc = nn.Linear(hidden, 2)

    def logits(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.abs(z1 - z2))

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(z1, z2), dim=-1)


class Siamese(nn.Module):
    def __init__(self, hidden: int = 32):
        super().__init__()
        self.encoder = Encoder(hidden)
        self.head = Head(hidden)

    def logits(self, xb, lb, xc, lc):
        return self.head.logits(self.encoder(xb, lb), self.encoder(xc, lc))
