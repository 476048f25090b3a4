r"""The paper's evaluation of configs/paper/galaxy10.py (Table 3): the linear protocol on the frozen
backbone with 1, 2, 5, 10, 100 and 1000 training examples per class (3 seeds each) and with all of
them; `:finetune` fine-tunes the whole encoder with a linear head, on all training examples and on
the same k-shot sets (3 draws each), Table 3's fine-tuning rows.

    python -m lejepa_jax.evaluate --config=configs/paper/probe/galaxy10.py[:finetune] --workdir=DIR

Left out by the paper: the probe's epochs and learning rate (lejepa_jax's defaults: 30 epochs, at
least 300 steps for the k-shot sets, lr 1e-3; fine-tuning: 100 epochs, at least 300 steps for the
k-shot sets) and how the k examples are drawn (uniformly per class, a fresh draw per seed).
Fine-tuning runs 1 + 6 x 3 times; the 1000-shot runs see nearly the whole training split, so
`:finetune` costs about 10 full fine-tuning runs.
"""

from lejepa_jax import config_lib, recipes

TABLE3_SHOTS = (1, 2, 5, 10, 100, 1000)  # training examples per class


def get_config(arg: str | None = None):
  args = config_lib.parse_arg(arg, finetune=False)
  if args["finetune"]:
    shots = dict(shots=TABLE3_SHOTS, seeds=3, min_steps=300)
    return recipes.probe_config(
      "paper_galaxy10_finetune", evaluators="finetune", finetune=dict(epochs=100.0, **shots)
    )
  return recipes.probe_config(
    "paper_galaxy10",
    evaluators="linear,linear_shots",
    linear_shots=dict(shots=TABLE3_SHOTS, seeds=3),
  )
