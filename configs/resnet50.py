r"""ResNet-50 LeJEPA pretraining (the paper's ConvNet setting: global views only, all the same size).

    python -m lejepa_jax.main --config=configs/resnet50.py --workdir=DIR --config.data.data_dir=TFDS_DIR

Default: ImageNet-1k, 4 global 224 px views, lambda 0.02, AdamW lr 5e-4, wd 5e-4 (the paper's ConvNet
weight decay), batch 512. `dataset=imagenette` (or any prepared TFDS name) and `epochs=N` after ':'.
"""

import ml_collections

from lejepa_jax import config_lib

TRAIN_SIZES = {"imagenet2012": config_lib.IMAGENET_TRAIN_EXAMPLES, "imagenette": 9_469}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = config_lib.parse_arg(arg, dataset="imagenet2012", epochs=100, runlocal=False)
  c = config_lib.base_config()
  c.data.name = args["dataset"]
  c.data.global_views = dict(count=4, size=224, scale=(0.08, 1.0))
  c.data.local_views = dict(count=0, size=96, scale=(0.05, 0.3))
  c.model = ml_collections.ConfigDict(dict(
      name="resnet", variant="50", in_channels=3, dtype="auto",
      projector=dict(hidden_dim=2048, out_dim=128, num_layers=3)))
  c.loss.sigreg_weight = 0.02
  c.optim.weight_decay = 5e-4
  examples = TRAIN_SIZES.get(args["dataset"], config_lib.IMAGENET_TRAIN_EXAMPLES)
  config_lib.set_schedule(c, float(args["epochs"]), examples)
  return config_lib.finish(c, args)
