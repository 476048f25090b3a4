r"""A seconds-long training config for the tests: ViT-Mi/8 on a prepared 20 px image folder.

python -m lejepa_jax.main --config=tests/tiny_config.py:<data_dir> --workdir=DIR
"""

import ml_collections

from lejepa_jax import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = config_lib.base_config()
  c.total_steps, c.log_every, c.checkpoint_every = 6, 1, 3
  c.data.name, c.data.data_dir, c.data.channels = "unit_train", arg, 3
  c.data.eval_split = "train"
  c.data.global_batch_size, c.data.num_workers = 8, 0
  c.data.global_views = dict(count=2, size=16, scale=(0.5, 1.0))
  c.data.local_views = dict(count=2, size=8, scale=(0.2, 0.5))
  c.data.mean, c.data.std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
  c.model = ml_collections.ConfigDict(
    dict(
      name="vit",
      variant="Mi/8",
      img_size=16,
      in_channels=3,
      dtype="float32",
      projector=dict(hidden_dim=32, out_dim=8, num_layers=3),
    )
  )
  c.loss.num_slices = 32
  c.optim.warmup_steps = 2
  c.probe.num_classes = 4
  c.mesh.axes = dict(data=4, fsdp=2)
  return c
