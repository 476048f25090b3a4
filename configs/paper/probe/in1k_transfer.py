r"""Table 2: an ImageNet-1k run's frozen backbone probed on another dataset with 1, 10 and all
training examples per class.

    python -m lejepa_jax.evaluate --config=configs/paper/probe/in1k_transfer.py:dataset=dtd \
        --workdir=DIR   # dataset=: dtd, aircraft, cars, cifar10, cifar100, flowers102, food101, pets

DIR is a run of configs/paper/in1k_vit_l14.py or configs/paper/in1k_convnextv2_h.py. Published
(Table 2, top-1; ViT-L/14 | ConvNeXt-V2-H):

  shots  DTD          aircraft     cars         cifar10      cifar100
  1      33.21|32.15   9.37| 8.07   3.40| 4.28  51.65|50.95  27.01|31.48
  10     64.72|61.84  35.25|30.67  22.25|24.46  85.15|85.74  59.77|63.29
  all    78.30|76.60  57.01|52.99  57.28|54.88  96.50|96.15  83.71|81.34
  shots  flowers102   food         pets         average
  1      48.53|48.74  17.14|17.95  46.11|58.98  29.55|31.58
  10     92.53|91.78  50.90|49.32  77.00|78.53  60.95|60.70
  all    91.21|91.11  82.05|77.64  89.74|89.76  79.48|77.56

The linear protocol on the CLS tokens of the last two blocks (ConvNets: the pooled final map), images
at the run's resolution and normalisation. Left out by the paper: the probe's epochs and lr, how the
k examples are drawn and how many seeds (lejepa_jax: 3 draws per k, each uniform per class) and the
splits (TFDS test splits; FGVC-Aircraft from an image folder, see config_lib.DATASETS).
"""

from lejepa_jax import config_lib, recipes

DATASETS = ("dtd", "aircraft", "cars", "cifar10", "cifar100", "flowers102", "food101", "pets")


def get_config(arg: str | None = None):
  args = config_lib.parse_arg(arg, dataset="dtd")
  if args["dataset"] not in DATASETS:
    raise ValueError(f"Table 2 has no dataset {args['dataset']!r}; its datasets: {list(DATASETS)}.")
  return recipes.probe_config(
    f"paper_transfer_{args['dataset']}",
    evaluators="linear,linear_shots",
    dataset=args["dataset"],
    linear_shots=dict(shots=(1, 10), seeds=3),
  )
