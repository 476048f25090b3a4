r"""Offline preparation of local data into TFDS ArrayRecord datasets, without network access.

    python -m lejepa_jax.prepare fashion_mnist --out=DATA_DIR \
        [--source=/usr/share/datasets/fashion-mnist]
    python -m lejepa_jax.prepare folder --name=my_images --source=PATH --out=DATA_DIR
        [--skip_bad_images]

The result is read back like any TFDS dataset: `tfds.data_source(name, split, data_dir=DATA_DIR)`.
Preparing a dataset that is already there does nothing. Images are stored PNG-encoded (TFDS then
needs no TensorFlow to write them). An image that cannot be decoded (or a JPEG cut short) stops
the preparation with its path, and nothing is written; with --skip_bad_images each is listed and
left out.
"""

from __future__ import annotations

from absl import flags

from lejepa_jax import cli
from lejepa_jax.data import prepare

DATASETS = ("fashion_mnist", "folder")  # the command's positional argument
_PROG = "python -m lejepa_jax.prepare"
_FLAGS = flags.FlagValues()  # this command's own flags (`lejepa_jax.cli`)
_OUT = flags.DEFINE_string("out", None, "TFDS data_dir to write into", flag_values=_FLAGS)
_SOURCE = flags.DEFINE_string(
  "source", None, "IDX folder (fashion_mnist) or image folder (folder)", flag_values=_FLAGS
)
_NAME = flags.DEFINE_string("name", None, "dataset name for `folder`", flag_values=_FLAGS)
_SKIP_BAD_IMAGES = flags.DEFINE_bool(
  "skip_bad_images",
  False,
  "`folder`: leave out images that cannot be decoded (each is listed) instead of stopping at the first",
  flag_values=_FLAGS,
)


def main(argv: list[str] | None = None) -> None:
  """The command line (module docstring); `argv` without the program name, None: sys.argv[1:]."""
  (dataset,) = cli.parse(
    _FLAGS, argv, prog=_PROG, doc=__doc__, required=("out",), positional=(("dataset", DATASETS),)
  )
  if dataset == "fashion_mnist":
    path = prepare.prepare_fashion_mnist(_OUT.value, _SOURCE.value or prepare.FASHION_MNIST_DIR)
  else:
    if not _NAME.value or not _SOURCE.value:
      cli.usage_error(_FLAGS, _PROG, "`folder` needs --name and --source")
    path = prepare.prepare_image_folder(_NAME.value, _SOURCE.value, _OUT.value, _SKIP_BAD_IMAGES.value)
  print(f"[prepare] dataset ready at {path}")


if __name__ == "__main__":
  main()
