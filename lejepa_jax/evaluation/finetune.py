r"""Full fine-tuning: the whole encoder and a new linear head trained on labelled data, the evaluation
the paper reports next to frozen probes.

    python -m lejepa_jax.evaluate --config=configs/probe/fashion_mnist.py:finetune --workdir=DIR

`finetune` among a probe config's evaluators runs it on the checkpoint being evaluated (not on the
baselines); its options are `probe.finetune` (`config_lib.FINETUNE_OPTIONS`, the defaults). Results
sit beside the frozen probes in `DIR/eval/finetune.jsonl`.

Recipe, the paper's fine-tuning protocol scaled to small datasets: AdamW with linear warmup and
cosine decay; layer-wise lr decay for ViTs (block i of L trains at lr * decay^(L - i), the patch and
position embeddings and the CLS/register tokens at lr * decay^(L + 1), the final norm and the head at
lr); label smoothing; random-resized crops and flips of the training split from the same grain
pipeline as pretraining (one view per image, the crop scale from the options; colour augmentation
is not used). The head reads the backbone's pooled output (a ViT's final CLS token, a ConvNet's
pooled map) and starts at zero. The batch is sharded over every device (mesh axis "data"), the
parameters replicated; accuracy is top-1 on the centre crops of the evaluation split.

k-shot fine-tuning (the paper's Table 3): with `shots=(1, 10, ...)` the evaluator also fine-tunes a
fresh copy of the backbone on k random training examples of each class, `seeds` draws per k (draw s
picks the examples with seed s and fine-tunes with seed `seed + s`), and reports `{k}shot` (mean
top-1 over the draws) and `{k}shot_std`, as the `linear_shots` probe does for the frozen backbone.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from lejepa_jax import config_lib, data
from lejepa_jax.evaluation import evaluators, progress
from lejepa_jax.models import vit
from lejepa_jax.scale import sharding


class Classifier(nnx.Module):
  """A backbone with a linear head on its pooled output: images [N, H, W, C] -> logits [N, classes]."""

  def __init__(self, backbone: nnx.Module, num_classes: int, *, rngs: nnx.Rngs):
    self.backbone = backbone
    self.head = nnx.Linear(
      backbone.pooled_dim, num_classes, kernel_init=nnx.initializers.zeros, rngs=rngs
    )

  def __call__(self, images: jax.Array) -> jax.Array:
    pooled, _ = self.backbone(images)
    return self.head(pooled.astype(jnp.float32))


def layer_scale(path: tuple, depth: int | None, decay: float) -> float:
  """The lr multiplier of the parameter at `path` (names from the Classifier down) for a ViT of
  `depth` blocks; 1 for every parameter of other backbones (`depth` None)."""
  names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
  if depth is None or names[0] != "backbone" or names[1] == "norm":
    return 1.0
  if names[1] == "blocks":
    return decay ** (depth - int(names[2]))
  return decay ** (depth + 1)  # patch_embed, pos_embed, cls, registers: below the first block


def _scale_by_layer(depth: int | None, decay: float) -> optax.GradientTransformation:
  def update(updates, state, params=None):
    del params
    return jax.tree_util.tree_map_with_path(
      lambda path, u: u * layer_scale(path, depth, decay), updates
    ), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(depth: int | None, total_steps: int, options: dict) -> optax.GradientTransformation:
  """AdamW (decay on matrices and kernels only), warmup + cosine, layer-wise lr decay; one object
  per setting, so fine-tuning runs of one setting (the draws of a k-shot evaluation) have equal
  graphdefs and share one traced and compiled step."""
  return _optimizer(
    depth,
    total_steps,
    *(float(options[key]) for key in ("lr", "warmup_fraction", "weight_decay", "layer_decay")),
  )


@functools.lru_cache(maxsize=16)
def _optimizer(
  depth: int | None,
  total_steps: int,
  lr: float,
  warmup_fraction: float,
  weight_decay: float,
  layer_decay: float,
) -> optax.GradientTransformation:
  warmup = max(1, int(warmup_fraction * total_steps))
  schedule = optax.warmup_cosine_decay_schedule(
    0.0, lr, warmup, max(total_steps, 2), end_value=lr * 1e-3
  )
  decayed = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
  return optax.chain(
    optax.scale_by_adam(),
    optax.add_decayed_weights(weight_decay, mask=decayed),
    optax.scale_by_learning_rate(schedule),
    _scale_by_layer(depth, layer_decay),
  )


# Jitted once for the module: a run's graphdef and options are static arguments, so runs with equal
# ones (the k-shot draws of one k) reuse one trace and one executable.
@functools.partial(
  jax.jit, static_argnames=("graphdef", "mean", "std", "num_classes", "smoothing"), donate_argnums=1
)
def _train_step(graphdef, state, images, labels, *, mean, std, num_classes, smoothing):
  """One step on uint8 images [n, H, W, C]: (new state, loss)."""
  model, optimizer = nnx.merge(graphdef, state)
  model.train()
  targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), smoothing)

  def loss_fn(model):
    logits = model(data.normalize(images, mean, std))
    return optax.softmax_cross_entropy(logits, targets).mean()

  loss, grads = nnx.value_and_grad(loss_fn)(model)
  optimizer.update(model, grads)
  return nnx.state((model, optimizer)), loss


@functools.partial(jax.jit, static_argnames=("graphdef", "mean", "std"))
def _predict(graphdef, state, images, *, mean, std):
  model = nnx.merge(graphdef, state)
  model.eval()
  return jnp.argmax(model(data.normalize(images, mean, std)), axis=-1)


def _views(config: ml_collections.ConfigDict, options: dict) -> Any:
  """Host-side random-resized crops and flips at the pretraining's view size, one per image."""
  size = int(config.data.global_views["size"])
  return data.multicrop_from_config(
    {
      "channels": config.data.channels,
      "augment_on_device": True,  # geometric part only
      "global_views": {"count": 1, "size": size, "scale": tuple(options["crop_scale"])},
      "local_views": {"count": 0, "size": size, "scale": tuple(options["crop_scale"])},
      "skip_bad_records": config.data.get("skip_bad_records", False),
    }
  )


def finetune(
  backbone: nnx.Module,
  config: ml_collections.ConfigDict,
  eval_batches: Iterable[dict],
  *,
  num_classes: int,
  train_examples: int | None = None,
  train_indices: Sequence[int] | None = None,
  mesh: jax.sharding.Mesh | None = None,
  **options,
) -> dict[str, float]:
  """Fine-tunes a copy of `backbone` with a new head on `config`'s training split (its first
  `train_examples`, or the records at `train_indices`); returns {"top1": accuracy on `eval_batches`
  ({"image" uint8 [n, H, W, C], "label" [n], "valid" [n]}, e.g. evaluate.eval_batches),
  "loss_start", "loss_end": the mean training loss of the first and last tenth of the steps,
  "steps", "seconds"}. `options`: see `config_lib.FINETUNE_OPTIONS` (`shots` and `seeds` are
  `evaluate`'s)."""
  options = {**config_lib.FINETUNE_OPTIONS, **options}
  mesh = mesh or sharding.make_mesh({"data": -1})
  source = data.open_source(config.data.name, config.data.split, config.data.data_dir)
  if train_indices is not None:
    source = data.ChosenRecords(source, train_indices)
  n = min(len(source), train_examples or len(source))
  batch = int(options["batch_size"])
  total = max(2, math.ceil(options["epochs"] * n / batch), int(options["min_steps"]))
  model = Classifier(nnx.clone(backbone), num_classes, rngs=nnx.Rngs(options["seed"]))
  depth = len(model.backbone.blocks) if isinstance(model.backbone, vit.ViT) else None
  optimizer = nnx.Optimizer(model, make_optimizer(depth, total, options), wrt=nnx.Param)
  graphdef, state = nnx.split((model, optimizer))
  # A copy, never the caller's buffers: the step donates the state, and `nnx.clone` shares arrays
  # with `backbone`, which later runs (k-shot draws, other evaluators) read again.
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  # (`device_put(..., may_alias=False)` still hands device 0 the caller's buffer here.)
  state = jax.device_put(jax.tree.map(jnp.copy, state), replicated)
  norm = dict(mean=tuple(config.data.mean), std=tuple(config.data.std))
  step = functools.partial(
    _train_step, graphdef, num_classes=num_classes, smoothing=float(options["label_smoothing"]), **norm
  )
  if n < len(source):
    source = data.FirstRecords(source, n)
  batches = iter(
    data.train_dataset(
      source,
      _views(config, options),
      global_batch_size=batch,
      seed=options["seed"],
      process_index=jax.process_index(),
      process_count=jax.process_count(),
    )
  )
  losses, start = [], time.perf_counter()
  shown = progress.Progress("fine-tuning", total, "steps")
  for _ in range(total):
    local = next(batches)
    placed = data.to_global_batch({"image": local["global"][:, 0], "label": local["label"]}, mesh)
    with jax.set_mesh(mesh):
      state, loss = step(state, placed["image"], placed["label"])
    losses.append(loss)
    shown.update(1)
  losses = np.asarray(jax.device_get(losses))
  tenth = max(1, total // 10)
  # The classifier alone, without its optimizer (whose schedule differs with the run's length):
  # every run of one backbone shares one predictor.
  top1 = _accuracy(*nnx.split(nnx.merge(graphdef, state)[0]), eval_batches, mesh, norm)
  return {
    "top1": top1,
    "loss_start": float(losses[:tenth].mean()),
    "loss_end": float(losses[-tenth:].mean()),
    "steps": total,
    "seconds": time.perf_counter() - start,
  }


def evaluate(
  backbone: nnx.Module,
  config: ml_collections.ConfigDict,
  eval_batches: Callable[[], Iterable[dict]],
  *,
  num_classes: int,
  train_examples: int | None = None,
  shots: Sequence[int] = (),
  seeds: int = 3,
  mesh: jax.sharding.Mesh | None = None,
  **options,
) -> dict[str, float]:
  """The fine-tuning evaluator: `finetune` on the training split (its first `train_examples`), then
  for each k in `shots` `seeds` runs on k examples per class (module doc): that run's results plus
  {"{k}shot": mean top-1, "{k}shot_std": its standard deviation over the draws, "{k}shot_steps":
  the steps of each of those runs}. `eval_batches` makes the evaluation batches anew for each run."""
  results = finetune(
    backbone,
    config,
    eval_batches(),
    num_classes=num_classes,
    train_examples=train_examples,
    mesh=mesh,
    **options,
  )
  if not shots:
    return results
  source = data.open_source(config.data.name, config.data.split, config.data.data_dir)
  labels = data.record_labels(source)
  seed = int(options.pop("seed", config_lib.FINETUNE_OPTIONS["seed"]))
  for k in shots:
    runs = [
      finetune(
        backbone,
        config,
        eval_batches(),
        num_classes=num_classes,
        train_indices=evaluators.per_class_sample(labels, int(k), num_classes, draw),
        mesh=mesh,
        seed=seed + draw,
        **options,
      )
      for draw in range(int(seeds))
    ]
    top1 = [run["top1"] for run in runs]
    results[f"{k}shot"], results[f"{k}shot_std"] = float(np.mean(top1)), float(np.std(top1))
    results[f"{k}shot_steps"] = runs[0]["steps"]
  return results


def _accuracy(graphdef, state, eval_batches: Iterable[dict], mesh, norm) -> float:
  """Top-1 of the fine-tuned model on the evaluation batches (padding rows left out)."""
  predict = functools.partial(_predict, graphdef, **norm)
  correct = seen = 0
  for batch in eval_batches:
    valid = batch["valid"]
    with jax.set_mesh(mesh):
      predicted = np.asarray(jax.device_get(predict(state, batch["image"])))
    correct += int(np.sum(predicted[valid] == batch["label"][valid]))
    seen += int(np.sum(valid))
  return correct / max(seen, 1)
