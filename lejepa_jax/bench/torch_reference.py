"""PyTorch eager references of the LeJEPA train step, for side-by-side timing (needs torch).

Built from a lejepa_jax config, the same computation as `lejepa_jax.training.steps.train_step`
(without the online probe): the backbone (a ViT or a basic-block ResNet), the BN-MLP projector,
the LeJEPA loss (prediction term + per-view SIGReg, straightforward formulation) and AdamW, in
eager mode at PyTorch's best on the CPU (its own thread count; channels_last for convolutions):
float32, or bfloat16 autocast (products in bfloat16, parameters and optimizer in float32).
"""

from __future__ import annotations

import numpy as np


def matmul_ceiling(bfloat16: bool = False, size: int = 2048, repeats: int = 10) -> float:
  """PyTorch's matmul FLOP/s on this machine (the fastest of `repeats` square products), to set
  beside XLA's: the products are most of the step on both sides."""
  import torch

  from lejepa_jax.bench import common

  a = torch.randn(size, size, dtype=torch.bfloat16 if bfloat16 else torch.float32)
  return 2 * size**3 / min(common.wall_times(lambda: torch.matmul(a, a), repeats))


def vit_step_seconds(config, repeats: int = 3, bfloat16: bool = False) -> float:
  """Seconds per PyTorch eager LeJEPA step of a ViT config (`model.name == "vit"`): pre-norm blocks
  with a CLS token, position embeddings resized bicubically for other view sizes, PyTorch's fused
  `scaled_dot_product_attention`, the BN-MLP projector over every view, the LeJEPA loss and AdamW;
  float32, or bfloat16 autocast (products in bfloat16, parameters and optimizer in float32)."""
  import torch
  from torch import nn

  from lejepa_jax.models import vit

  m = config.model
  size, patch = vit.parse_variant(m.variant)
  width, heads, grid = size.width, size.num_heads, m.img_size // patch

  class Block(nn.Module):
    def __init__(self):
      super().__init__()
      self.norm1, self.norm2 = nn.LayerNorm(width, eps=1e-6), nn.LayerNorm(width, eps=1e-6)
      self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
      self.mlp = nn.Sequential(nn.Linear(width, size.mlp_dim), nn.GELU(), nn.Linear(size.mlp_dim, width))

    def forward(self, x):
      n, t, _ = x.shape
      q, k, v = self.qkv(self.norm1(x)).reshape(n, t, 3, heads, -1).permute(2, 0, 3, 1, 4)
      attended = nn.functional.scaled_dot_product_attention(q, k, v)
      x = x + self.proj(attended.transpose(1, 2).reshape(n, t, width))
      return x + self.mlp(self.norm2(x))

  class Backbone(nn.Module):
    def __init__(self):
      super().__init__()
      self.embed = nn.Linear(patch * patch * m.in_channels, width)
      self.cls = nn.Parameter(torch.zeros(1, 1, width))
      self.pos = nn.Parameter(torch.zeros(1, width, grid, grid))
      self.blocks = nn.Sequential(*[Block() for _ in range(size.depth)])
      self.norm = nn.LayerNorm(width, eps=1e-6)

    def forward(self, x):
      n, c, h, w = x.shape
      x = x.reshape(n, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 3, 5, 1)
      pos = self.pos
      if h // patch != grid:
        pos = nn.functional.interpolate(pos, size=(h // patch, w // patch), mode="bicubic")
      x = self.embed(x.reshape(n, -1, patch * patch * c)) + pos.flatten(2).transpose(1, 2)
      x = torch.cat([self.cls.expand(n, -1, -1), x], 1)
      return self.norm(self.blocks(x))[:, 0]

  backbone = Backbone()
  return _lejepa_step_seconds(torch, backbone, width, config, repeats, bfloat16)


def _projector(nn, in_dim: int, p):
  """The BN-MLP projector (Linear-BN-ReLU x (num_layers - 1), Linear)."""
  dims = [in_dim] + [p.hidden_dim] * (p.num_layers - 1)
  head = []
  for a, b in zip(dims[:-1], dims[1:]):
    head += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU()]
  return nn.Sequential(*head, nn.Linear(dims[-1], p.out_dim))


def _lejepa_step_seconds(
  torch, backbone, pooled_dim: int, config, repeats: int, bfloat16: bool = False, memory_format=None
) -> float:
  """Median seconds of an eager LeJEPA step of `backbone` ([n, C, H, W] -> pooled [n, pooled_dim])
  with the config's projector, views (global and local groups through the backbone separately, as
  `lejepa_jax.training.steps` does), loss and AdamW."""
  from torch import nn

  from lejepa_jax.bench import common

  torch.manual_seed(0)
  m, d, loss_config = config.model, config.data, config.loss
  projector = _projector(nn, pooled_dim, m.projector)
  params = list(backbone.parameters()) + list(projector.parameters())
  optimizer = torch.optim.AdamW(params, lr=config.optim.lr, weight_decay=config.optim.weight_decay)
  n, g = d.global_batch_size, d.global_views
  fmt = memory_format or torch.contiguous_format
  views = [
    torch.rand(v["count"] * n, m.in_channels, v["size"], v["size"]).to(memory_format=fmt)
    for v in (g, d.local_views)
    if v["count"]
  ]
  t, w, phi = _quadrature(torch, loss_config.t_max, loss_config.num_knots)

  def step():
    directions = nn.functional.normalize(torch.randn(m.projector.out_dim, loss_config.num_slices), dim=0)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
      pooled = torch.cat([backbone(v).reshape(-1, n, pooled_dim) for v in views])  # [V, N, C]
      z = projector(pooled.reshape(-1, pooled_dim)).reshape(len(pooled), n, -1).float()
    loss = _lejepa_loss(torch, z, g["count"], directions, loss_config.sigreg_weight, t, w, phi)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

  return common.median_seconds(step, repeats)


def _lejepa_loss(torch, z, num_global: int, directions, sigreg_weight: float, t, w, phi):
  """z [V, N, K] -> the LeJEPA loss: prediction term toward the global views' mean, per-view SIGReg."""
  centre = z[:num_global].mean(0, keepdim=True)
  pred = ((centre - z) ** 2).mean()
  x = z @ directions  # [V, N, M]
  tx = x.unsqueeze(-1) * t  # [V, N, M, knots]
  real, imag = torch.cos(tx).mean(1), torch.sin(tx).mean(1)  # [V, M, knots]
  reg = (z.shape[1] * (((real - phi) ** 2 + imag**2) * w).sum(-1)).mean()
  return (1 - sigreg_weight) * pred + sigreg_weight * reg


def _quadrature(torch, t_max: float, num_knots: int):
  """(knots t, weights w, Gaussian characteristic function at t) of the trapezoid rule on [0, t_max]."""
  knots = np.linspace(0, t_max, num_knots)
  weights = np.full(num_knots, 2 * knots[1]) * np.exp(-(knots**2) / 2)
  weights[[0, -1]] /= 2
  return tuple(torch.tensor(a, dtype=torch.float32) for a in (knots, weights, np.exp(-(knots**2) / 2)))


def resnet_step_seconds(config, repeats: int = 3, channels_last: bool = True) -> float:
  """Seconds per PyTorch eager LeJEPA step of a ResNet config (`model.name == "resnet"`): the same
  backbone (stem, width, basic blocks), BN-MLP projector, views, loss and AdamW as
  `lejepa_jax.training.steps.train_step` on that config, channels_last by default (PyTorch's fastest CPU
  convolution layout), with PyTorch's own thread count."""
  import torch
  from torch import nn

  m = config.model
  from lejepa_jax.models import resnet

  kind, depths = resnet.RESNET_DEPTHS[m.variant]
  if kind != "basic":
    raise ValueError("the PyTorch ResNet reference builds basic-block ResNets (18, 34) only")

  def conv_bn(cin, cout, k, stride):
    return [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)]

  class Block(nn.Module):
    def __init__(self, cin, cout, stride):
      super().__init__()
      self.body = nn.Sequential(
        *conv_bn(cin, cout, 3, stride), nn.ReLU(inplace=True), *conv_bn(cout, cout, 3, 1)
      )
      self.short = (
        nn.Sequential(*conv_bn(cin, cout, 1, stride)) if stride != 1 or cin != cout else nn.Identity()
      )

    def forward(self, x):
      return torch.relu(self.body(x) + self.short(x))

  width = m.width
  stem = (
    conv_bn(m.in_channels, width, 3, 1)
    if m.small_stem
    else conv_bn(m.in_channels, width, 7, 2) + [nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
  )
  body, cin = list(stem) + ([nn.ReLU()] if m.small_stem else []), width
  for stage, depth in enumerate(depths):
    for i in range(depth):
      cout = width * resnet.STAGE_MULTIPLES[stage]
      body.append(Block(cin, cout, 2 if stage > 0 and i == 0 else 1))
      cin = cout
  body += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
  fmt = torch.channels_last if channels_last else torch.contiguous_format
  backbone = nn.Sequential(*body).to(memory_format=fmt)
  return _lejepa_step_seconds(torch, backbone, cin, config, repeats, memory_format=fmt)
