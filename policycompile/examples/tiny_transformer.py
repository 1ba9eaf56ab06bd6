"""A small decoder-only transformer (CPU-sized), written without a single torch.compile
decorator: policies/demo.yaml decides how it is compiled."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

#: Values recorded by :func:`log_activation_stats` when enabled (a host sync: a graph break).
STATS: list[float] = []
STATS_ENABLED = True


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Rotary helper: swap and negate the two halves of the last dimension."""
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


def apply_rotary(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary position embedding of queries and keys."""
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def log_activation_stats(x: torch.Tensor) -> None:
    """Record the mean absolute activation: ``float()`` syncs with the host, a graph break."""
    if STATS_ENABLED:
        # Convert before touching the list: Dynamo then never guards on the list's length,
        # which changes every call and would recompile.
        value = float(x.detach().abs().mean())
        STATS.append(value)


def check_finite(x: torch.Tensor) -> None:
    """Warn about NaN or inf activations: a branch on tensor data, a graph break."""
    if not torch.isfinite(x).all():
        warnings.warn("non-finite activations", RuntimeWarning, stacklevel=2)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        q, k, v = (y.transpose(1, 2) for y in (q, k, v))
        q, k = apply_rotary(q, k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        out: torch.Tensor = self.out(y.transpose(1, 2).reshape(b, t, d))
        return out


class MLP(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.up = nn.Linear(dim, 4 * dim, bias=False)
        self.down = nn.Linear(4 * dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        down: torch.Tensor = self.down(F.gelu(self.up(x)))
        return down


class DecoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = RMSNorm(dim), RMSNorm(dim)
        self.attn = Attention(dim, heads)
        self.mlp = MLP(dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        attended: torch.Tensor = self.attn(self.norm1(x), cos, sin)
        x = x + attended
        log_activation_stats(x)
        mixed: torch.Tensor = self.mlp(self.norm2(x))
        x = x + mixed
        check_finite(x)
        return x


class TinyTransformer(nn.Module):
    def __init__(self, vocab: int = 256, dim: int = 64, heads: int = 4, layers: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(DecoderBlock(dim, heads) for _ in range(layers))
        self.norm = RMSNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head_dim = dim // heads

    def rotary_tables(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        inv = 1.0 / (10000 ** (torch.arange(0, self.head_dim, 2).float() / self.head_dim))
        angles = torch.outer(torch.arange(t).float(), inv)
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos(), angles.sin()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        cos, sin = self.rotary_tables(tokens.shape[1])
        for block in self.blocks:
            x = block(x, cos, sin)
        logits: torch.Tensor = self.head(self.norm(x))
        return logits


def build(seed: int = 0, **sizes: int) -> TinyTransformer:
    """A model with deterministic random weights."""
    torch.manual_seed(seed)
    return TinyTransformer(**sizes).eval()
