"""Frozen-feature evaluation of a training run's checkpoints: linear probe and kNN (first evaluators).

    python -m lejepa_jax.evaluate --workdir=<training workdir> [--step=N] [--train_examples=N]

Restores the encoder from the run's orbax checkpoint onto this job's devices (any count), extracts
frozen features once (the paper's protocol: the features `encoder.embed` returns, then LayerNorm inside
the probe), and runs the evaluators. Results go to `workdir/eval/<evaluator>.jsonl` and the console.
"""

from __future__ import annotations

import json
import os
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from lejepa_jax import checkpointing, data, sharding, steps, train


def restore_encoder(workdir: str, step: int | None = None, mesh: jax.sharding.Mesh | None = None):
  """(encoder in eval mode, its config, the step) from a training run's checkpoint."""
  manager = checkpointing.training_manager(os.path.join(workdir, "checkpoints"))
  try:
    step = manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"No checkpoint in {workdir}/checkpoints; train first.")
    config = ml_collections.ConfigDict(checkpointing.restore_config(manager, step))
    mesh = mesh or sharding.make_mesh({"data": -1})
    objects = sharding.create_sharded(lambda: train.build_train_objects(config), mesh)
    graphdef, state = nnx.split(objects)
    like = nnx.to_pure_dict(state)
    saved = checkpointing.restore_state_only(manager, step, train.abstract_tree(
        train.to_savable(like)))
    nnx.replace_by_pure_dict(state, train.from_savable(saved, like))
  finally:
    manager.close()
  encoder = nnx.merge(graphdef, state)[0]
  encoder.eval()
  return encoder, config, step


def extract_features(encoder, config, split: str, limit: int | None = None, batch_size: int = 256
                     ) -> tuple[np.ndarray, np.ndarray]:
  """Frozen features [n, F] and labels [n] of a split (every example once, centre crops)."""
  source = data.open_source(config.data.name, split, config.data.data_dir)
  if limit is not None and limit < len(source):
    source = _Prefix(source, limit)
  crop = data.CenterCrop(config.data.global_views["size"], int(config.data.channels),
                         crop_fraction=1.0)
  embed = nnx.jit(lambda m, x: m.embed(steps.normalize(x, tuple(config.data.mean),
                                                       tuple(config.data.std))))
  features, labels = [], []
  for batch in data.eval_dataset(source, crop, global_batch_size=batch_size):
    valid = batch["valid"]
    features.append(np.asarray(embed(encoder, batch["image"]), np.float32)[valid])
    labels.append(batch["label"][valid])
  return np.concatenate(features), np.concatenate(labels)


class _Prefix:
  """The first `n` examples of a source (for a quick probe on a subset of a large split)."""

  def __init__(self, source, n: int):
    self.source, self.n = source, n

  def __len__(self):
    return self.n

  def __getitem__(self, index):
    return self.source[index]


def linear_probe(train_x, train_y, test_x, test_y, num_classes: int, *, epochs: int = 30,
                 batch_size: int = 256, lr: float = 1e-3, weight_decay: float = 1e-6,
                 seed: int = 0) -> dict[str, float]:
  """LayerNorm + Linear trained with AdamW (warmup + cosine) on frozen features; top-1 (and top-5)."""
  probe = steps.LinearProbe(train_x.shape[1], num_classes, rngs=nnx.Rngs(seed))
  steps_per_epoch = max(1, len(train_x) // batch_size)
  total = epochs * steps_per_epoch
  schedule = optax.warmup_cosine_decay_schedule(0.0, lr, max(1, total // 20), total)
  optimizer = nnx.Optimizer(probe, optax.adamw(schedule, weight_decay=weight_decay), wrt=nnx.Param)

  @nnx.jit
  def update(probe, optimizer, x, y):
    loss_fn = lambda p: optax.softmax_cross_entropy_with_integer_labels(p(x), y).mean()  # noqa: E731
    optimizer.update(probe, nnx.grad(loss_fn)(probe))

  rng = np.random.default_rng(seed)
  for _ in range(epochs):
    order = rng.permutation(len(train_x))
    for i in range(steps_per_epoch):
      idx = order[i * batch_size:(i + 1) * batch_size]
      update(probe, optimizer, jnp.asarray(train_x[idx]), jnp.asarray(train_y[idx]))
  logits = np.asarray(nnx.jit(lambda p, x: p(x))(probe, jnp.asarray(test_x)))
  result = {"top1": float(np.mean(np.argmax(logits, -1) == test_y))}
  if num_classes > 5:
    top5 = np.argsort(-logits, axis=-1)[:, :5]
    result["top5"] = float(np.mean(np.any(top5 == test_y[:, None], axis=-1)))
  return result


def knn(train_x, train_y, test_x, test_y, num_classes: int, *, k: int = 20,
        temperature: float = 0.07, chunk: int = 1024) -> dict[str, float]:
  """Weighted kNN on cosine similarity: votes exp(sim / temperature) of the k nearest neighbours."""
  normalise = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # noqa: E731
  bank, queries = jnp.asarray(normalise(train_x)), normalise(test_x)
  bank_labels = jnp.asarray(train_y)

  @jax.jit
  def predict(q):
    sims, idx = jax.lax.top_k(q @ bank.T, k)
    votes = jax.nn.one_hot(bank_labels[idx], num_classes) * jnp.exp(sims / temperature)[..., None]
    return jnp.argmax(votes.sum(1), -1)

  predictions = np.concatenate([np.asarray(predict(jnp.asarray(queries[i:i + chunk])))
                                for i in range(0, len(queries), chunk)])
  return {"top1": float(np.mean(predictions == test_y))}


def evaluate(workdir: str, step: int | None = None, train_examples: int | None = None
             ) -> dict[str, dict[str, float]]:
  """Runs the evaluators on one checkpoint; appends results to workdir/eval/<name>.jsonl."""
  encoder, config, step = restore_encoder(workdir, step)
  train_x, train_y = extract_features(encoder, config, config.data.split, train_examples)
  test_x, test_y = extract_features(encoder, config, config.data.eval_split)
  num_classes = int(config.probe.num_classes)
  results = {"linear": linear_probe(train_x, train_y, test_x, test_y, num_classes),
             "knn": knn(train_x, train_y, test_x, test_y, num_classes)}
  if jax.process_index() == 0:
    os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
    for name, values in results.items():
      with open(os.path.join(workdir, "eval", f"{name}.jsonl"), "a") as f:
        f.write(json.dumps({"step": step, **values}) + "\n")
  return results


def main(argv: list[str] | None = None) -> None:
  import argparse  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(prog="python -m lejepa_jax.evaluate", description=__doc__)
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--step", type=int)
  parser.add_argument("--train_examples", type=int, help="probe on the first N training examples")
  args = parser.parse_args(argv)
  results = evaluate(args.workdir, args.step, args.train_examples)
  for name, values in results.items():
    print(f"{name:>8}: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in values.items()))


if __name__ == "__main__":
  main()
