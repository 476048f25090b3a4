r"""ResNet-50 LeJEPA pretraining (the paper's ConvNet setting: global views only, all the same size).

    python -m lejepa_jax.main --config=configs/resnet50.py --workdir=DIR --config.data.data_dir=TFDS_DIR

Default: ImageNet-1k, 4 global 224 px views, lambda 0.02, AdamW lr 5e-4, wd 5e-4 (the paper's ConvNet
weight decay), batch 512. Arguments after ':': dataset=imagenette (config_lib.DATASETS), epochs=N,
runlocal. For another prepared dataset keep the default and set --config.data.name,
--config.total_steps, --config.optim.warmup_steps and --config.probe.num_classes.
"""

import ml_collections

from lejepa_jax import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = config_lib.parse_arg(arg, dataset="imagenet2012", epochs=100.0, **config_lib.RUNLOCAL_ARGS)
  c = config_lib.base_config()
  c.data.global_views = dict(count=4, size=224, scale=(0.08, 1.0))
  c.data.local_views = dict(count=0, size=96, scale=(0.05, 0.3))
  c.model = config_lib.model_config(
    "resnet", "50", projector=dict(hidden_dim=2048, out_dim=128, num_layers=3)
  )
  c.loss.sigreg_weight = 0.02
  c.optim.weight_decay = 5e-4
  data = config_lib.set_dataset(c, known_dataset(args["dataset"]))
  config_lib.set_schedule(c, args["epochs"], data.train_examples)
  return config_lib.finish(c, args)


def known_dataset(name: str) -> str:
  """`name` if config_lib.DATASETS knows its sizes (the schedule's epochs and the probe need both;
  never guessed), else an error saying how to train on another dataset."""
  if name not in config_lib.DATASETS:
    raise ValueError(
      f"configs/resnet50.py does not know dataset={name!r} (known: "
      f"{sorted(config_lib.DATASETS)}). For another dataset, run without dataset= and set "
      f"--config.data.name={name} --config.total_steps=N --config.optim.warmup_steps=N "
      "--config.probe.num_classes=N."
    )
  return name
