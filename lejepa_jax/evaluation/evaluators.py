"""Frozen-feature evaluators, one API: `evaluator(features: FeatureSet, **options) -> {metric: value}`.

The evaluation job (`lejepa_jax.evaluate`) extracts features once per checkpoint and calls the
evaluators its config names, by name through `lejepa_jax.evaluation.registry` (which also holds the
evaluators that need the encoder: pictures, finetune); each function here is usable on its own with
any [n, F] features and labels.

  - linear:     LayerNorm + Linear trained with AdamW (warmup + cosine) -> top-1 (top-5).
  - knn:        k nearest neighbours by cosine similarity, temperature-weighted votes -> top-1.
  - fewshot:    closed-form ridge regression on k examples per class, several seeds -> mean/std top-1.
  - linear_shots: the linear protocol on k examples per class, several seeds -> mean/std top-1.
  - label_free: RankMe (effective rank) of the features and projections, SIGReg of the projections.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from lejepa_jax import losses
from lejepa_jax.evaluation import progress
from lejepa_jax.models import probe as probe_lib


@dataclasses.dataclass
class FeatureSet:
  """Frozen features of a training split and an evaluation split.

  train_x [n, F], train_y [n], test_x [m, F], test_y [m]; test_z [m, K] are projector outputs of the
  evaluation split (None for encoders without a projector, or raw pixels).
  """

  train_x: np.ndarray
  train_y: np.ndarray
  test_x: np.ndarray
  test_y: np.ndarray
  num_classes: int
  test_z: np.ndarray | None = None


def linear(
  fs: FeatureSet,
  *,
  epochs: int = 30,
  batch_size: int = 256,
  lr: float = 1e-3,
  weight_decay: float = 1e-6,
  seed: int = 0,
) -> dict[str, float]:
  """LayerNorm + Linear trained with AdamW (warmup + cosine) on frozen features; top-1 (and top-5)."""
  probe = probe_lib.LinearProbe(fs.train_x.shape[1], fs.num_classes, rngs=nnx.Rngs(seed))
  steps_per_epoch = max(1, len(fs.train_x) // batch_size)
  total = max(2, epochs * steps_per_epoch)  # the schedule needs a step of decay after warmup
  schedule = optax.warmup_cosine_decay_schedule(0.0, lr, max(1, total // 20), total)
  optimizer = nnx.Optimizer(probe, optax.adamw(schedule, weight_decay=weight_decay), wrt=nnx.Param)

  graphdef, state = nnx.split((probe, optimizer))

  # One compiled call per epoch (a scan over its minibatches) on features held on the device: a
  # Python call per minibatch cost about 60 s of the demo's evaluation per encoder. The features
  # are arguments, not closures (closed-over arrays would be baked into the program).
  @functools.partial(jax.jit, donate_argnums=0)
  def epoch(state, x, y, order):
    def update(state, idx):
      probe, optimizer = nnx.merge(graphdef, state)
      loss_fn = lambda p: optax.softmax_cross_entropy_with_integer_labels(p(x[idx]), y[idx]).mean()
      optimizer.update(probe, nnx.grad(loss_fn)(probe))
      return nnx.state((probe, optimizer)), None

    return jax.lax.scan(update, state, order)[0]

  rng = np.random.default_rng(seed)
  x, y = jnp.asarray(fs.train_x), jnp.asarray(fs.train_y)
  batch_size = min(batch_size, len(fs.train_x))  # fewer examples than a batch: one smaller batch
  used = steps_per_epoch * batch_size
  meter = progress.Progress(
    f"linear probe on {len(fs.train_x)} x {fs.train_x.shape[1]} features", epochs, "epochs"
  )
  for _ in range(epochs):
    order = rng.permutation(len(fs.train_x))[:used].reshape(steps_per_epoch, batch_size)
    state = epoch(state, x, y, jnp.asarray(order, jnp.int32))
    jax.block_until_ready(state)
    meter.update()
  probe, _ = nnx.merge(graphdef, state)
  predict = nnx.jit(lambda p, x: p(x))
  logits = np.concatenate(
    [
      np.asarray(predict(probe, jnp.asarray(fs.test_x[i : i + 4096])))
      for i in range(0, len(fs.test_x), 4096)
    ]
  )
  result = {"top1": float(np.mean(np.argmax(logits, -1) == fs.test_y))}
  if fs.num_classes > 5:
    top5 = np.argsort(-logits, axis=-1)[:, :5]
    result["top5"] = float(np.mean(np.any(top5 == fs.test_y[:, None], axis=-1)))
  return result


def _unit_rows(x):
  """Rows scaled to unit L2 norm: [n, F] -> [n, F], for NumPy arrays and (traced) jax Arrays."""
  xp = jnp if isinstance(x, jax.Array) else np
  return x / xp.maximum(xp.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn(
  fs: FeatureSet, *, k: int = 20, temperature: float = 0.07, chunk: int = 1024
) -> dict[str, float]:
  """Weighted kNN on cosine similarity: votes exp(sim / temperature) of the k nearest neighbours."""
  # Normalised on the device, in place (donated): one copy of the training features, not three.
  bank = jax.jit(_unit_rows, donate_argnums=0)(jnp.asarray(fs.train_x, jnp.float32))
  queries, bank_labels = _unit_rows(fs.test_x), jnp.asarray(fs.train_y)

  # The bank is an argument, not a closure: closed-over arrays would be baked into the program as
  # constants (gigabytes for large feature maps).
  @jax.jit
  def predict(bank, bank_labels, q):
    sims, idx = jax.lax.top_k(q @ bank.T, k)
    votes = jax.nn.one_hot(bank_labels[idx], fs.num_classes) * jnp.exp(sims / temperature)[..., None]
    return jnp.argmax(votes.sum(1), -1)

  predictions = np.concatenate(
    [
      np.asarray(predict(bank, bank_labels, jnp.asarray(queries[i : i + chunk])))
      for i in range(0, len(queries), chunk)
    ]
  )
  return {"top1": float(np.mean(predictions == fs.test_y))}


def ridge_classifier(
  x: np.ndarray, y: np.ndarray, num_classes: int, ridge: float
) -> tuple[np.ndarray, np.ndarray]:
  """Closed-form ridge regression onto centred one-hot targets: (W [F, C], b [C]).

  Solved in the dual (an n x n system, n = examples), which is cheap for few-shot n << F:
  W = Xc^T (Xc Xc^T + ridge * I)^-1 Yc with Xc, Yc centred, b = mean(Y) - mean(X) W.
  """
  x = x.astype(np.float64)
  targets = np.eye(num_classes)[y]
  x_mean, t_mean = x.mean(0), targets.mean(0)
  xc, tc = x - x_mean, targets - t_mean
  alpha = np.linalg.solve(xc @ xc.T + ridge * np.eye(len(x)), tc)
  weights = xc.T @ alpha
  return weights, t_mean - x_mean @ weights


def fewshot(
  fs: FeatureSet, *, shots: Sequence[int] = (1, 5, 10), seeds: int = 5, ridge: float = 1e-2
) -> dict[str, float]:
  """k-shot accuracy: ridge classifiers on k random training examples per class, several seeds.

  Features are L2-normalised first (the scale of frozen features varies between encoders; the ridge
  penalty is relative to unit-norm rows). Returns `{k}shot` (mean top-1 over seeds) and `{k}shot_std`.
  """
  test_x = _unit_rows(fs.test_x)  # training rows are normalised as they are drawn (few of them)
  result = {}
  for k in shots:
    accuracies = []
    for seed in range(seeds):
      idx = per_class_sample(fs.train_y, k, fs.num_classes, seed)
      weights, bias = ridge_classifier(
        _unit_rows(fs.train_x[idx]), fs.train_y[idx], fs.num_classes, ridge
      )
      accuracies.append(np.mean(np.argmax(test_x @ weights + bias, -1) == fs.test_y))
    result[f"{k}shot"] = float(np.mean(accuracies))
    result[f"{k}shot_std"] = float(np.std(accuracies))
  return result


def per_class_sample(labels: np.ndarray, k: int, num_classes: int, seed: int) -> np.ndarray:
  """Indices of k random examples of each class (all of a class with fewer), drawn with `seed`."""
  rng = np.random.default_rng(seed)
  by_class = [np.flatnonzero(labels == c) for c in range(num_classes)]
  return np.concatenate(
    [rng.choice(members, min(k, len(members)), replace=False) for members in by_class if len(members)]
  )


def linear_shots(
  fs: FeatureSet,
  *,
  shots: Sequence[int] = (1, 10),
  seeds: int = 3,
  min_steps: int = 300,
  epochs: int = 30,
  batch_size: int = 256,
  lr: float = 1e-3,
  weight_decay: float = 1e-6,
) -> dict[str, float]:
  """The linear protocol (`linear`) on k training examples per class, for each k in `shots`, drawn
  anew for each of `seeds` seeds: `{k}shot` (mean top-1 over seeds) and `{k}shot_std`.

  Tiny training sets get at least `min_steps` optimizer steps (30 epochs of 10 examples would be 30
  steps). The paper's k-shot columns (Table 3: 1 to 1000 per class, 3 seeds; Table 2: 1 and 10).
  """
  result = {}
  for k in shots:
    accuracies = []
    for seed in range(seeds):
      idx = per_class_sample(fs.train_y, k, fs.num_classes, seed)
      subset = dataclasses.replace(fs, train_x=fs.train_x[idx], train_y=fs.train_y[idx])
      steps_per_epoch = max(1, len(idx) // min(batch_size, len(idx)))
      sub_epochs = max(epochs, -(-min_steps // steps_per_epoch))
      accuracies.append(
        linear(
          subset, epochs=sub_epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed
        )["top1"]
      )
    result[f"{k}shot"] = float(np.mean(accuracies))
    result[f"{k}shot_std"] = float(np.std(accuracies))
  return result


def rankme(x: np.ndarray, eps: float = 1e-7) -> float:
  """RankMe: exp(entropy) of the normalised singular values of x [n, F] (between 1 and min(n, F));
  NaN when x holds non-finite values.

  Garrido et al., "RankMe", ICML 2023: p_k = s_k / sum(s) + eps, rank = exp(-sum p_k log p_k).
  """
  x = np.asarray(x, np.float64)
  if not np.all(np.isfinite(x)):  # a diverged encoder: no rank to speak of (and the SVD would raise)
    return float("nan")
  singular = np.linalg.svd(x, compute_uv=False)
  p = singular / max(singular.sum(), 1e-30) + eps
  return float(np.exp(-np.sum(p * np.log(p))))


def label_free(
  fs: FeatureSet, *, num_slices: int = 1024, max_examples: int = 10000, seed: int = 0
) -> dict[str, float]:
  """Metrics that need no labels, on the evaluation split: RankMe of the features (and of the
  projector outputs) and the SIGReg statistic of the projector outputs over the N examples (scaled
  by N as in training: about 1 for isotropic Gaussian embeddings, about 0.4 N when they collapse to a
  point).
  """
  result = {"rankme_features": rankme(fs.test_x[:max_examples])}
  if fs.test_z is not None:
    z = fs.test_z[:max_examples]
    result["rankme_projections"] = rankme(z)
    # Standardise nothing: SIGReg measures the distance to N(0, I) exactly as training does.
    result["sigreg"] = float(
      losses.sigreg(jnp.asarray(z, jnp.float32), jax.random.key(seed), num_slices=num_slices)
    )
  return result
