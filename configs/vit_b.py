r"""ViT-B/16 on ImageNet-1k with the paper's recipe (2 x 224 + 6 x 96 views, lambda 0.05, 1024 slices).

    python -m lejepa_jax.main --config=configs/vit_b.py --workdir=$HOME/gcs/lejepa/vit_b \
        --config.data.data_dir=$HOME/gcs/tensorflow_datasets

(On a TPU pod, launch/tpu_pod.sh mounts gs://BUCKET at ~/gcs with Cloud Storage FUSE.)

Recipe (docs/method.md, Recipes): AdamW lr 5e-4, wd 5e-2, warmup then cosine to lr/1000, bfloat16
compute, batch 512, 100 epochs, drop-path 0.1, projector 2048-2048-512; parameters FSDP-sharded over
1 device(s). Arguments after ':': variant=B/8 (any ViT size/patch), epochs=N, runlocal.
"""

from lejepa_jax import config_lib


def get_config(arg: str | None = None):
  return config_lib.imagenet_vit_config(arg, variant="B/16", fsdp=1)
