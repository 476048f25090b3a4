"""Per-member outputs of an ablation: a training workdir per member (metrics, checkpoints,
summary, selection metrics), readable by the evaluation job and export like any run."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence

import numpy as np
from flax import nnx

from lejepa_jax.ablation import sweep_plan
from lejepa_jax.evaluation import evaluators
from lejepa_jax.training import checkpointing, event_log, train_state

log = logging.getLogger("lejepa_jax")


class MemberOutputs:
  """A member's training workdir (DIR/members/<name>): metrics, checkpoints, summary."""

  def __init__(self, workdir: str, member: sweep_plan.Member, keep: int):
    self.member = member
    self.dir = os.path.join(workdir, "members", member.name)
    os.makedirs(self.dir, exist_ok=True)
    self.writer = event_log.MetricsWriter(self.dir)
    self.manager = checkpointing.training_manager(os.path.join(self.dir, "checkpoints"), keep)
    self.diverged_at: int | None = None

  def write(self, step: int, row: dict[str, float]) -> None:
    if not math.isfinite(row["loss"]) and self.diverged_at is None:
      self.diverged_at = step
      log.warning(
        "member %s: non-finite loss at step %d (its results are kept and reported; the "
        "other members are unaffected)",
        self.member.name,
        step,
      )
    self.writer.write(step, row)

  def save(self, step: int, state, iterator) -> None:
    checkpointing.save_training(
      self.manager,
      step,
      train_state.to_savable(nnx.to_pure_dict(state)),
      iterator,
      json.loads(self.member.config.to_json()),
    )

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
    self.writer.close()


def selection_path(workdir: str, member: sweep_plan.Member) -> str:
  return os.path.join(workdir, "members", member.name, "selection.json")


def write_selection(outputs: Sequence[MemberOutputs], results: dict[str, np.ndarray]) -> None:
  """selection.json per member: the evaluation job's label-free metrics (RankMe of features and
  projections, SIGReg of the projections over the eval examples) and the online probe's accuracy."""
  labels = results["labels"]
  for i, out in enumerate(outputs):
    # label_free reads only the evaluation part of the feature set.
    features = evaluators.FeatureSet(
      results["features"][i],
      labels,
      results["features"][i],
      labels,
      int(out.member.config.probe.num_classes),
      results["projections"][i],
    )
    row = {
      "eval_examples": int(len(labels)),
      **evaluators.label_free(features),
      "online_probe_eval_accuracy": float(np.mean(results["predictions"][i] == labels)),
    }
    with open(os.path.join(out.dir, "selection.json"), "w") as f:
      json.dump(row, f, indent=2)
    rows = event_log.read_metrics(out.dir)
    if rows:
      event_log.write_summary(out.dir, rows[-1])
