r"""The authors' small-scale recipe: Imagenette, ViT-S/8 at 128 px, 4 same-size views, lambda 0.02.

    python -m lejepa_jax.main --config=configs/imagenette.py --workdir=DIR \
        --config.data.data_dir=TFDS_DIR

4 global views of 128 px, scale (0.08, 1.0); projector output 16; AdamW lr 2e-3, wd 5e-2; batch 256;
800 epochs (the published online linear probe: 90.7%). `imagenette` is a TFDS dataset; prepare it
where the data is reachable, or point `data.name` at a prepared image folder.
"""

import ml_collections

from lejepa_jax import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = config_lib.parse_arg(arg, epochs=800.0, **config_lib.RUNLOCAL_ARGS)
  c = config_lib.base_config()
  c.data.global_batch_size = 256
  c.data.global_views = dict(count=4, size=128, scale=(0.08, 1.0))
  c.data.local_views = dict(count=0, size=64, scale=(0.05, 0.3))
  c.model.variant = "S/8"
  c.model.img_size = 128
  c.model.projector = dict(hidden_dim=2048, out_dim=16, num_layers=3)
  c.loss.sigreg_weight = 0.02
  c.optim.lr = 2e-3
  data = config_lib.set_dataset(c, "imagenette")
  config_lib.set_schedule(c, args["epochs"], data.train_examples)
  return config_lib.finish(c, args)
