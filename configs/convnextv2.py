r"""ConvNeXt-V2 LeJEPA pretraining on ImageNet-1k (the paper's best ImageNet result uses ConvNeXt-V2-H).

    python -m lejepa_jax.main --config=configs/convnextv2.py:variant=huge --workdir=DIR \
        --config.data.data_dir=TFDS_DIR

Global views only (4 x 224 px), lambda 0.05, AdamW lr 5e-4, wd 5e-2, batch 512, 100 epochs.
"""

import ml_collections

from lejepa_jax import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = config_lib.parse_arg(arg, variant="base", epochs=100.0, **config_lib.RUNLOCAL_ARGS)
  c = config_lib.base_config()
  c.data.global_views = dict(count=4, size=224, scale=(0.08, 1.0))
  c.data.local_views = dict(count=0, size=96, scale=(0.05, 0.3))
  c.model = config_lib.model_config("convnextv2", args["variant"], drop_path=0.1)
  config_lib.set_schedule(c, args["epochs"], config_lib.IMAGENET_TRAIN_EXAMPLES)
  c.mesh.axes = dict(data=-1, fsdp=4 if args["variant"] in ("large", "huge") else 1)
  return config_lib.finish(c, args)
