"""Every evaluator by name, one signature: `get(name).run(subject, **options) -> {metric: value}`.

A `Subject` is what is evaluated: a checkpoint's encoder with its run's config, or a baseline (raw
pixels, the untrained encoder). Its frozen features are extracted on first use and shared by the
evaluators that read them, so a probe config of fine-tuning alone extracts none. Each evaluator says
what it needs of its subject (`Evaluator.needs`):

  - "features":          any frozen features [n, F] and labels (linear, knn, fewshot, linear_shots);
  - "encoder_features":  an encoder's features with its projector outputs (label_free);
  - "encoder":           the encoder and the images themselves (pictures, finetune).

A subject serves some of these (raw pixels: features; the untrained encoder: both kinds of features;
a checkpoint: all three); the job runs the named evaluators its subject serves.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import ml_collections

from lejepa_jax.evaluation import evaluators

FEATURES, ENCODER_FEATURES, ENCODER = "features", "encoder_features", "encoder"
SERVES_ALL = frozenset((FEATURES, ENCODER_FEATURES, ENCODER))


@dataclasses.dataclass
class Subject:
  """What the evaluators evaluate. `extract` computes the FeatureSet when an evaluator first asks."""

  label: str  # "checkpoint step 700", "baseline pixels": for the logs
  config: ml_collections.ConfigDict  # the run's config, reading the data the probe config names
  probe: ml_collections.ConfigDict
  extract: Callable[[], evaluators.FeatureSet]
  encoder: Any = None  # the restored encoder (None for raw pixels)
  serves: frozenset = SERVES_ALL
  pictures_prefix: str = ""  # where `pictures` writes, e.g. DIR/eval/pictures/<probe>_step700

  @functools.cached_property
  def features(self) -> evaluators.FeatureSet:
    return self.extract()


@dataclasses.dataclass(frozen=True)
class Evaluator:
  """An evaluator of the registry: `run(subject, **options)` and what it needs of the subject."""

  run: Callable[..., dict[str, float]]
  needs: str


def _on_features(evaluate: Callable[..., dict[str, float]]) -> Callable[..., dict[str, float]]:
  """A frozen-feature evaluator (evaluators.py: `evaluate(FeatureSet, **options)`) on a subject."""
  return lambda subject, **options: evaluate(subject.features, **options)


def _pictures(subject: Subject, **options) -> dict[str, float]:
  from lejepa_jax.evaluation import pictures  # plotting: only when asked

  fs = subject.features
  pictures.draw(
    subject.encoder, subject.config, fs.test_x, fs.test_y, subject.pictures_prefix, **options
  )
  return {}  # files, no metrics


def _finetune(subject: Subject, **options) -> dict[str, float]:
  """`finetune.evaluate` of the subject's backbone on the probe config's splits."""
  from lejepa_jax.evaluation import extraction, finetune  # only when asked

  config, probe = subject.config, subject.probe
  limit = extraction.example_limit(probe.eval_examples)
  return finetune.evaluate(
    subject.encoder.backbone,
    config,
    lambda: extraction.eval_batches(config, config.data.eval_split, limit),
    num_classes=int(config.probe.num_classes),
    train_examples=extraction.example_limit(probe.train_examples),
    **options,
  )


EVALUATORS: dict[str, Evaluator] = {
  "linear": Evaluator(_on_features(evaluators.linear), FEATURES),
  "knn": Evaluator(_on_features(evaluators.knn), FEATURES),
  "fewshot": Evaluator(_on_features(evaluators.fewshot), FEATURES),
  "linear_shots": Evaluator(_on_features(evaluators.linear_shots), FEATURES),
  "label_free": Evaluator(_on_features(evaluators.label_free), ENCODER_FEATURES),
  "pictures": Evaluator(_pictures, ENCODER),
  "finetune": Evaluator(_finetune, ENCODER),
}


def get(name: str) -> Evaluator:
  if name not in EVALUATORS:
    raise ValueError(f"Unknown evaluator {name!r}; available: {sorted(EVALUATORS)}.")
  return EVALUATORS[name]


def names(probe: ml_collections.ConfigDict) -> list[str]:
  """The evaluators a probe config names, each checked (an unknown name fails before any work)."""
  listed = [n.strip() for n in probe.evaluators.split(",") if n.strip()]
  for name in listed:
    get(name)
  return listed
