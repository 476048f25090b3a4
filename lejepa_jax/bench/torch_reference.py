"""PyTorch eager reference of the ViT-S/16 LeJEPA step, for side-by-side timing (needs torch).

The same computation as lejepa_jax.steps.train_step on the ViT-S/16 case: a pre-norm ViT-S/16 with CLS
token, the MLP-BN projector, the LeJEPA loss (prediction term + per-view SIGReg, straightforward
formulation) and AdamW, eager mode: float32, or bfloat16 autocast (PyTorch's mixed precision: products
in bfloat16, parameters and optimizer in float32).
"""

from __future__ import annotations

import time

import numpy as np


def matmul_ceiling(bfloat16: bool = False, size: int = 2048, repeats: int = 10) -> float:
  """PyTorch's matmul FLOP/s on this machine (the fastest of `repeats` square products), to set
  beside XLA's: the products are most of the step on both sides."""
  import torch  # pylint: disable=import-outside-toplevel
  from lejepa_jax.bench import common  # pylint: disable=import-outside-toplevel
  a = torch.randn(size, size, dtype=torch.bfloat16 if bfloat16 else torch.float32)
  return 2 * size**3 / min(common.wall_times(lambda: torch.matmul(a, a), repeats))


def vit_s16_step_seconds(images: int = 16, views: int = 2, repeats: int = 3,
                         bfloat16: bool = False) -> float:
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn  # pylint: disable=import-outside-toplevel

  width, depth, heads, patch = 384, 12, 6, 16

  class Block(nn.Module):
    def __init__(self):
      super().__init__()
      self.norm1, self.norm2 = nn.LayerNorm(width, eps=1e-6), nn.LayerNorm(width, eps=1e-6)
      self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
      self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x):
      n, t, _ = x.shape
      q, k, v = self.qkv(self.norm1(x)).reshape(n, t, 3, heads, -1).permute(2, 0, 3, 1, 4)
      attended = nn.functional.scaled_dot_product_attention(q, k, v)
      x = x + self.proj(attended.transpose(1, 2).reshape(n, t, width))
      return x + self.mlp(self.norm2(x))

  class Encoder(nn.Module):
    def __init__(self):
      super().__init__()
      self.embed = nn.Conv2d(3, width, patch, patch)
      self.cls = nn.Parameter(torch.zeros(1, 1, width))
      self.pos = nn.Parameter(torch.zeros(1, 197, width))
      self.blocks = nn.Sequential(*[Block() for _ in range(depth)])
      self.norm = nn.LayerNorm(width, eps=1e-6)
      self.projector = nn.Sequential(
          nn.Linear(width, 2048), nn.BatchNorm1d(2048), nn.ReLU(),
          nn.Linear(2048, 2048), nn.BatchNorm1d(2048), nn.ReLU(), nn.Linear(2048, 512))

    def forward(self, x):
      x = self.embed(x).flatten(2).transpose(1, 2)
      x = torch.cat([self.cls.expand(len(x), -1, -1), x], 1) + self.pos
      return self.projector(self.norm(self.blocks(x))[:, 0])

  def sigreg(z, directions, t, w, phi):
    x = z @ directions
    tx = x.unsqueeze(-1) * t
    real, imag = torch.cos(tx).mean(0), torch.sin(tx).mean(0)
    return (z.shape[0] * (((real - phi) ** 2 + imag ** 2) * w).sum(-1)).mean()

  torch.manual_seed(0)
  model = Encoder()
  optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
  batch = torch.rand(images * views, 3, 224, 224)
  knots = np.linspace(0, 3, 17)
  weights = np.full(17, 2 * knots[1]) * np.exp(-knots**2 / 2)
  weights[[0, -1]] /= 2
  t, w, phi = (torch.tensor(a, dtype=torch.float32)
               for a in (knots, weights, np.exp(-knots**2 / 2)))

  def step():
    directions = torch.nn.functional.normalize(torch.randn(512, 1024), dim=0)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
      z = model(batch).reshape(views, images, -1).float()  # [V, N, K]
    pred = ((z.mean(0, keepdim=True) - z) ** 2).mean()
    reg = torch.stack([sigreg(z[v], directions, t, w, phi) for v in range(views)]).mean()
    loss = 0.95 * pred + 0.05 * reg
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

  step()  # warm-up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  return float(np.median(times))
