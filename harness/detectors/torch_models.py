"""The torch modules of the learned detectors, kept apart so that their detectors (and a scenario naming them)
import torch only when a model is built.

Both are plain `nn.Linear` layers with no data-dependent control flow: exportable to ONNX and quantizable.
"""

from __future__ import annotations

import torch
from torch import nn


class LinearLSTM(nn.Module):
    """One LSTM layer over a (B, window) series of scalars, then a linear head: the next value, (B, 1).

    `residual`: what the head's output is added to: "last" (the window's last value), "mean" (the window's
    mean) or "none" (the head predicts the value itself). A residual keeps the forecast sane after a level
    shift that training never saw.
    """

    def __init__(self, window: int, hidden: int, residual: str = "last"):
        super().__init__()
        self.window, self.hidden, self.residual = window, hidden, residual
        self.input_gates = nn.Linear(1, 4 * hidden)
        self.hidden_gates = nn.Linear(hidden, 4 * hidden, bias=False)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        gx = self.input_gates(x.unsqueeze(-1))  # (B, window, 4H)
        h = x.new_zeros(b, self.hidden)
        c = x.new_zeros(b, self.hidden)
        for t in range(self.window):  # fixed trip count: unrolled in the exported graph
            g = gx[:, t, :] + self.hidden_gates(h)
            i, f, u, o = g.chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(u)
            h = torch.sigmoid(o) * torch.tanh(c)
        out = self.head(h)  # (B, 1)
        if self.residual == "last":
            return out + x[:, -1:]
        if self.residual == "mean":
            return out + x.mean(dim=1, keepdim=True)
        return out


class DenseAE(nn.Module):
    """window -> hidden (-> hidden, `depth` times) -> bottleneck, and back. The hidden x hidden layers are the
    square matrix products INT8 speeds up (docs/quantization.md); the others are thin."""

    def __init__(self, window: int, hidden: int, bottleneck: int, centre: bool = True, depth: int = 0):
        super().__init__()
        self.centre = centre
        def square() -> list[nn.Module]:
            return [layer for _ in range(depth) for layer in (nn.Linear(hidden, hidden), nn.Tanh())]

        self.encoder = nn.Sequential(nn.Linear(window, hidden), nn.Tanh(), *square(), nn.Linear(hidden, bottleneck))
        self.decoder = nn.Sequential(nn.Linear(bottleneck, hidden), nn.Tanh(), *square(), nn.Linear(hidden, window))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.centre:
            m = x.mean(dim=1, keepdim=True)
            return self.decoder(self.encoder(x - m)) + m
        return self.decoder(self.encoder(x))


class Stack(nn.Module):
    """Models side by side on one window: model k reads columns spans[k] of it, and the outputs are
    concatenated (an ensemble's members as one exportable graph)."""

    def __init__(self, members: list[nn.Module], spans: list[tuple[int, int]]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.spans = tuple(tuple(s) for s in spans)

    def extra_repr(self) -> str:
        return f"spans={self.spans}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([m(x[:, a:b]) for m, (a, b) in zip(self.members, self.spans)], dim=1)
