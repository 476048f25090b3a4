"""Label-free model selection: does an ablation's training loss rank its members like accuracy does?

The paper (LeJEPA, section 6) finds the training loss correlated with linear-probe accuracy across
lambda / lr / weight-decay sweeps (Spearman 0.85-0.99 in magnitude: lower loss, higher accuracy),
more so with the loss rescaled by lambda^-alpha, alpha about 0.4. For every member of an ablation
(`lejepa_jax.ablate`) this collects:

  loss, pred, sigreg       the training loss and its parts, averaged over the last 10% of the logged
                           steps (one-batch values are noisy)
  online_train_acc         the online probe's accuracy on those training batches (same window)
  online_eval_acc          the online probe on the first eval-split examples (selection.json)
  linear_top1              the offline linear probe, if the evaluation job ran on the member
  rankme_features / _proj  RankMe of backbone features (what probes read) and of projector outputs,
                           on the same eval examples: exp(entropy of normalised singular values).
                           It is scale-free: a collapse to tiny but varied embeddings keeps a rank
  sigreg_eval              SIGReg of the projector outputs over those n examples: about 1.05 for
                           N(0, I) embeddings, about 0.40 n for embeddings collapsed to a point

and the Spearman correlations between loss and each accuracy across members: over all members, over
members with lambda > 0, and of loss * lambda^-alpha (lambda > 0 only). Values are as measured:
negative means lower loss goes with higher accuracy. Outputs: a table (returned and printed by the
ablation), DIR/ablation.json and a scatter DIR/ablation.png coloured by lambda.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

import numpy as np

from lejepa_jax import plots
from lejepa_jax.training import event_log

FINAL_FRACTION = 0.1
ACCURACIES = ("linear_top1", "knn_top1", "online_eval_acc", "online_train_acc")


def rankdata(x: Sequence[float]) -> np.ndarray:
  """1-based ranks, ties sharing their average rank (SciPy's 'average' method)."""
  x = np.asarray(x, np.float64)
  order = np.argsort(x, kind="stable")
  ranks = np.empty(len(x))
  ranks[order] = np.arange(1, len(x) + 1)
  for value in np.unique(x):
    tied = x == value
    ranks[tied] = ranks[tied].mean()
  return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
  """Spearman's rank correlation: Pearson's of the ranks. NaN for < 3 points or constant input."""
  if len(x) != len(y):
    raise ValueError(f"spearman needs equal lengths, got {len(x)} and {len(y)}.")
  if len(x) < 3:
    return float("nan")
  rx, ry = rankdata(x) - (len(x) + 1) / 2, rankdata(y) - (len(y) + 1) / 2
  denominator = math.sqrt(float(np.sum(rx**2) * np.sum(ry**2)))
  return float(np.sum(rx * ry) / denominator) if denominator > 0 else float("nan")


def final_metrics(rows: Sequence[dict]) -> dict[str, float]:
  """Training loss, its parts and online-probe accuracy, averaged over the last logged rows."""
  window = rows[-max(1, round(FINAL_FRACTION * len(rows))) :]
  mean = lambda key: float(np.mean([r[key] for r in window]))
  return {
    "loss": mean("loss"),
    "pred": mean("pred"),
    "sigreg": mean("sigreg"),
    "online_train_acc": mean("probe_accuracy"),
    "final_step": int(window[-1]["step"]),
  }


def probe_accuracy(member_dir: str, evaluator: str = "linear") -> float | None:
  """top1 of the evaluation job's `evaluator` ("linear", "knn") on the member's latest evaluated
  checkpoint (its last evaluation), if the job ran (`python -m lejepa_jax.ablate --probe=...`
  runs it)."""
  rows = _probe_rows(member_dir, evaluator)
  return float(rows[-1]["top1"]) if rows else None


def member_row(workdir: str, member) -> dict:
  """The report's row of one member (`sweep_plan.Member`)."""
  directory = os.path.join(workdir, "members", member.name)
  with open(os.path.join(directory, "selection.json")) as f:
    selection = json.load(f)
  row = {
    "name": member.name,
    **member.hparams(),
    **final_metrics(event_log.read_metrics(directory)),
    "online_eval_acc": selection["online_probe_eval_accuracy"],
    "linear_top1": probe_accuracy(directory, "linear"),
    "knn_top1": probe_accuracy(directory, "knn"),
    "rankme_features": selection["rankme_features"],
    "rankme_projections": selection["rankme_projections"],
    "sigreg_eval": selection["sigreg"],
    "eval_examples": selection["eval_examples"],
  }
  row["diverged"] = not math.isfinite(row["loss"])
  return row


def correlations(rows: Sequence[dict], alpha: float) -> dict[str, dict]:
  """Spearman(loss, accuracy) per accuracy measured on every member, over three member sets."""
  out = {}
  for accuracy in ACCURACIES:
    usable = [r for r in rows if not r["diverged"]]
    if any(r[accuracy] is None for r in usable):
      continue  # only accuracies every member has (a missing one would bias the ranking)
    positive = [r for r in usable if r["sigreg_weight"] > 0]

    def rho(rs, loss, accuracy=accuracy):
      return {"spearman": spearman([loss(r) for r in rs], [r[accuracy] for r in rs]), "members": len(rs)}

    out[accuracy] = {
      "loss, all members": rho(usable, lambda r: r["loss"]),
      "loss, lambda > 0": rho(positive, lambda r: r["loss"]),
      f"loss * lambda^-{alpha:g}, lambda > 0": rho(
        positive, lambda r: r["loss"] * r["sigreg_weight"] ** -alpha
      ),
    }
  return out


def correlations_by_step(workdir: str, rows: Sequence[dict], alpha: float) -> dict[int, dict]:
  """Spearman(loss, linear accuracy) at every checkpoint step the evaluation job evaluated for all
  members: the loss averaged over the logged rows before that step (as `final_metrics` does at the
  end), the linear probe of that step's checkpoint. Shows whether the relation firms up with
  training."""
  per_member = {}
  for row in rows:
    directory = os.path.join(workdir, "members", row["name"])
    per_member[row["name"]] = (
      {r["step"]: r["top1"] for r in _probe_rows(directory, "linear")},
      event_log.read_metrics(directory),
    )
  common = set.intersection(*(set(linear) for linear, _ in per_member.values())) if rows else set()
  out = {}
  for step in sorted(common):
    at_step = []
    for row in rows:
      linear, metrics = per_member[row["name"]]
      loss = final_metrics([m for m in metrics if m["step"] <= step])["loss"]
      at_step.append(
        {**row, "loss": loss, "linear_top1": linear[step], "diverged": not math.isfinite(loss)}
      )
    out[step] = correlations(at_step, alpha).get("linear_top1", {})
  return out


def format_table(rows: Sequence[dict], spearmans: dict[str, dict]) -> str:
  """Markdown: one row per member, then the correlations."""
  percent = lambda v: "" if v is None else f"{100 * v:.1f}"
  header = [
    "member",
    "lambda",
    "lr",
    "wd",
    "seed",
    "loss",
    "pred",
    "sigreg",
    "online acc (train)",
    "online acc (eval)",
    "linear acc",
    "kNN acc",
    "RankMe feat.",
    "RankMe proj.",
    "SIGReg (eval)",
  ]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for r in rows:
    cells = [
      r["name"],
      f"{r['sigreg_weight']:g}",
      f"{r['lr']:g}",
      f"{r['weight_decay']:g}",
      r["seed"],
      f"{r['loss']:.4f}",
      f"{r['pred']:.4f}",
      f"{r['sigreg']:.3f}",
      percent(r["online_train_acc"]),
      percent(r["online_eval_acc"]),
      percent(r["linear_top1"]),
      percent(r["knn_top1"]),
      f"{r['rankme_features']:.1f}",
      f"{r['rankme_projections']:.1f}",
      f"{r['sigreg_eval']:.1f}",
    ]
    lines.append("| " + " | ".join(map(str, cells)) + " |")
  lines.append("")
  for accuracy, values in spearmans.items():
    for subset, v in values.items():
      lines.append(f"Spearman({subset}; {accuracy}) = {v['spearman']:+.3f} over {v['members']} members")
  return "\n".join(lines)


def plot(rows: Sequence[dict], path: str, alpha: float, accuracy: str) -> None:
  """Accuracy against the loss (left) and loss * lambda^-alpha (right), coloured by lambda."""
  plt = plots.pyplot()

  lambdas = sorted({r["sigreg_weight"] for r in rows})
  colours = plt.get_cmap("viridis")(np.linspace(0, 1, max(len(lambdas), 2)))
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for ax, rescaled in zip(axes, (False, True)):
    xs = []
    for lam, colour in zip(lambdas, colours):
      members = [
        r
        for r in rows
        if r["sigreg_weight"] == lam
        and not r["diverged"]
        and r[accuracy] is not None
        and (lam > 0 or not rescaled)
      ]
      x = [r["loss"] * (lam**-alpha if rescaled else 1) for r in members]
      ax.scatter(
        x,
        [100 * r[accuracy] for r in members],
        color=colour,
        label=f"lambda {lam:g}",
        marker="x" if lam == 0 else "o",
        s=40,
      )
      xs += x
    if xs and min(xs) > 0 and max(xs) > 10 * min(xs):  # lambda = 0 alone is orders lower
      ax.set_xscale("log")
    ax.set_xlabel(f"training loss * lambda^-{alpha:g}" if rescaled else "training loss")
    ax.set_ylabel(f"{accuracy} (%)")
  axes[0].legend(fontsize=8)
  axes[1].set_title("lambda > 0")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_curves(workdir: str, rows: Sequence[dict], path: str, alpha: float) -> None:
  """Per member over training: the loss, the loss * lambda^-alpha, the online probe's accuracy
  (from metrics.jsonl), and the evaluation job's linear accuracy of each evaluated checkpoint:
  where along training the loss does or does not rank the members as their accuracy does."""
  plt = plots.pyplot()

  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  colours = plt.get_cmap("viridis")(np.linspace(0, 1, max(len(rows), 2)))
  for row, colour in zip(rows, colours):
    directory = os.path.join(workdir, "members", row["name"])
    metrics = event_log.read_metrics(directory)
    steps = [m["step"] for m in metrics]
    lam = row["sigreg_weight"]
    axes[0].plot(steps, [m["loss"] for m in metrics], color=colour, label=row["name"])
    if lam > 0:
      axes[1].plot(steps, [m["loss"] * lam**-alpha for m in metrics], color=colour)
    axes[2].plot(steps, [100 * m["probe_accuracy"] for m in metrics], color=colour, alpha=0.5)
    linear = _probe_rows(directory, "linear")
    if linear:
      axes[2].plot(
        [r["step"] for r in linear], [100 * r["top1"] for r in linear], "o-", color=colour, markersize=6
      )
  for ax, label in zip(
    axes,
    (
      "training loss",
      f"loss * lambda^-{alpha:g} (lambda > 0)",
      "online probe (line), linear probe (dots) %",
    ),
  ):
    ax.set_xlabel("step")
    ax.set_ylabel(label)
  axes[0].set_yscale("log")
  axes[1].set_yscale("log")
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _probe_rows(member_dir: str, evaluator: str) -> list[dict]:
  """The evaluation job's rows of checkpoints for `evaluator`, one per step (the last written)."""
  path = os.path.join(member_dir, "eval", f"{evaluator}.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    rows = {r["step"]: r for r in map(json.loads, f) if r.get("encoder", "checkpoint") == "checkpoint"}
  return [rows[k] for k in sorted(rows)]


def write_report(workdir: str, members: Sequence, alpha: float = 0.4) -> dict:
  """Builds the report of finished members; writes DIR/ablation.json, DIR/ablation.png and
  DIR/ablation_curves.png."""
  rows = [member_row(workdir, m) for m in members]
  spearmans = correlations(rows, alpha)
  by_step = correlations_by_step(workdir, rows, alpha)
  table = format_table(rows, spearmans) + "".join(
    f"\nat step {step}: Spearman({subset}; linear_top1) = {v['spearman']:+.3f}"
    for step, values in by_step.items()
    for subset, v in values.items()
  )
  report = {
    "alpha": alpha,
    "members": rows,
    "spearman": spearmans,
    "spearman_by_step": {str(k): v for k, v in by_step.items()},
    "table": table,
  }
  with open(os.path.join(workdir, "ablation.json"), "w") as f:
    json.dump(report, f, indent=2)
  accuracy = next((a for a in ACCURACIES if a in spearmans), "online_eval_acc")
  plot(rows, os.path.join(workdir, "ablation.png"), alpha, accuracy)
  plot_curves(workdir, rows, os.path.join(workdir, "ablation_curves.png"), alpha)
  return report
