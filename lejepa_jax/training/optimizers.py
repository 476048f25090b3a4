"""The optimizer of a training run: AdamW on a warmup-cosine learning-rate schedule."""

from __future__ import annotations

import jax
import optax


def lr_schedule(config, lr: float | jax.Array | None = None) -> optax.Schedule:
  """Linear warmup, then cosine decay to lr * final_lr_fraction at total_steps.

  `lr` (a float, or a traced scalar such as an ablation member's) replaces config.optim.lr.
  """
  if isinstance(lr, jax.Array):
    # optax schedules branch on their peak value in Python: scale the unit-peak schedule instead.
    unit = lr_schedule(config, 1.0)
    return lambda count: lr * unit(count)
  o, total = config.optim, config.total_steps
  lr = o.lr if lr is None else lr
  return optax.warmup_cosine_decay_schedule(
    0.0, lr, min(o.warmup_steps, max(total - 1, 1)), max(total, 2), end_value=lr * o.final_lr_fraction
  )


def make_optimizer(
  config, lr: float | jax.Array | None = None, weight_decay: float | jax.Array | None = None
) -> optax.GradientTransformation:
  """AdamW on `lr_schedule`; `lr` / `weight_decay` (floats or traced scalars) replace the config's.

  With `optim.clip_grad_norm` > 0 the gradients are first clipped to that global norm (off in the
  paper's recipe). The optimizer state's structure does not depend on `lr` or `weight_decay`.
  """
  weight_decay = config.optim.weight_decay if weight_decay is None else weight_decay
  adamw = optax.adamw(lr_schedule(config, lr), weight_decay=weight_decay)
  clip = float(config.optim.get("clip_grad_norm", 0.0))
  return optax.chain(optax.clip_by_global_norm(clip), adamw) if clip > 0 else adamw
