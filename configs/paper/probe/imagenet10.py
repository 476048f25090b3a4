r"""The paper's evaluation of configs/paper/imagenet10.py (Table 5): frozen linear probe on the pooled
final map, trained on the whole training split, top-1 on the test split (kNN beside it).

    python -m lejepa_jax.evaluate --config=configs/paper/probe/imagenet10.py --workdir=DIR
"""

from lejepa_jax import config_lib, recipes


def get_config(arg: str | None = None):
  config_lib.parse_arg(arg)
  return recipes.probe_config("paper_imagenet10")
