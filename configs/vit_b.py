r"""ViT-B/16 on ImageNet-1k with the paper's recipe (2 x 224 + 6 x 96 views, lambda 0.05, 1024 slices).

    python -m lejepa_jax.main --config=configs/vit_b.py --workdir=gs://BUCKET/lejepa/vit_b \
        --config.data.data_dir=gs://BUCKET/tensorflow_datasets

Recipe (PAPER_NOTES.md section 4): AdamW lr 5e-4, wd 5e-2, warmup then cosine to lr/1000, bfloat16
compute, batch 512, 100 epochs, drop-path 0.1, projector 2048-2048-512. Arguments after ':':
`variant=B/8` (any ViT size/patch), `epochs=N`, `runlocal`.
"""

import ml_collections

from lejepa_jax import config_lib

IMAGENET_TRAIN = 1_281_167


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = config_lib.parse_arg(arg, variant="B/16", epochs=100, runlocal=False)
  c = config_lib.base_config()
  c.model.variant = args["variant"]
  c.total_steps = config_lib.epochs_to_steps(float(args["epochs"]), IMAGENET_TRAIN,
                                             c.data.global_batch_size)
  c.optim.warmup_steps = config_lib.epochs_to_steps(10, IMAGENET_TRAIN, c.data.global_batch_size)
  if args["variant"].endswith("/14"):
    c.data.local_views = dict(c.data.local_views, size=98)  # multiples of the patch
  c.mesh.axes = dict(data=-1, fsdp=1)
  if args["runlocal"]:
    config_lib.apply_runlocal(c, int(args.get("steps", 30)))
  return c
