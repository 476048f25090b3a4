"""Data: offline TFDS ArrayRecord preparation, grain multi-crop pipelines, per-host slicing, resume."""

import gzip
import os

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from lejepa_jax import data
from lejepa_jax.data import augment, device_augment, prepare
from lejepa_jax.scale import sharding

NUM_IMAGES = 24


@pytest.fixture(scope="module")
def folder_dataset(tmp_path_factory):
  """A real TFDS ArrayRecord dataset: 24 constant-colour 8x8 images (value 10 * i), 2 classes."""
  root = tmp_path_factory.mktemp("images")
  for i in range(NUM_IMAGES):
    class_dir = root / f"class_{i % 2}"
    class_dir.mkdir(exist_ok=True)
    cv2.imwrite(str(class_dir / f"{i:02d}.png"), np.full((8, 8, 3), 10 * i, np.uint8))
  out = str(tmp_path_factory.mktemp("tfds"))
  prepare.prepare_image_folder("unit_images", str(root), out)
  return out


def _identity_multicrop(channels=3, skip_bad_records=False):
  """Views that are the image itself: the test can tell which example each view came from."""
  full = augment.Views(count=1, size=8, scale=(1.0, 1.0), ratio=(1.0, 1.0))
  none = augment.Views(count=0, size=4, scale=(0.5, 1.0))
  off = augment.Augment(flip=0, color_jitter=0, grayscale=0, blur=0, solarize=0)
  return augment.MultiCrop(full, none, off, channels=channels, skip_bad_records=skip_bad_records)


def _ids(batch):
  return [int(v) // 10 for v in batch["global"][:, 0, 0, 0, 0]]


def _write_idx(path, array):
  header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def test_prepare_fashion_mnist_from_idx_files(tmp_path):
  rng = np.random.default_rng(0)
  images = {"train": rng.integers(0, 256, (12, 28, 28)), "t10k": rng.integers(0, 256, (5, 28, 28))}
  labels = {"train": rng.integers(0, 10, 12), "t10k": rng.integers(0, 10, 5)}
  for prefix in images:
    _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images[prefix])
    _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels[prefix])
  out = str(tmp_path / "tfds")
  path = prepare.prepare_fashion_mnist(out, str(tmp_path))
  stamp = os.path.getmtime(os.path.join(path, "dataset_info.json"))
  prepare.prepare_fashion_mnist(out, str(tmp_path))  # preparing twice is a no-op
  assert os.path.getmtime(os.path.join(path, "dataset_info.json")) == stamp
  for split, prefix in (("train", "train"), ("test", "t10k")):
    source = tfds.data_source("fashion_mnist", split=split, data_dir=out)
    assert len(source) == len(labels[prefix])
    # TFDS stores records in its own shuffled order: compare as multisets of (pixels, label).
    got = sorted(
      (source[i]["image"][..., 0].tobytes(), int(source[i]["label"])) for i in range(len(source))
    )
    want = sorted(
      (img.astype(np.uint8).tobytes(), int(lab)) for img, lab in zip(images[prefix], labels[prefix])
    )
    assert got == want


def test_prepared_folder_reads_back_through_tfds(folder_dataset):
  source = tfds.data_source("unit_images", split="train", data_dir=folder_dataset)
  assert len(source) == NUM_IMAGES
  values = sorted(int(source[i]["image"][0, 0, 0]) for i in range(NUM_IMAGES))
  assert values == [10 * i for i in range(NUM_IMAGES)]


@pytest.mark.parametrize("process_count", [1, 2, 3])
def test_hosts_read_disjoint_slices_that_cover_the_split(folder_dataset, process_count):
  source = data.open_source("unit_images", "train", folder_dataset)
  seen = []
  for index in range(process_count):
    ds = data.train_dataset(
      source,
      _identity_multicrop(),
      global_batch_size=2 * process_count,
      seed=3,
      process_index=index,
      process_count=process_count,
      num_epochs=1,
    )
    host = [i for batch in ds for i in _ids(batch)]
    assert len(host) == NUM_IMAGES // process_count
    seen.append(set(host))
  assert set.union(*seen) == set(range(NUM_IMAGES))
  assert sum(len(s) for s in seen) == NUM_IMAGES


def test_epochs_are_reshuffled_and_complete(folder_dataset):
  source = data.open_source("unit_images", "train", folder_dataset)
  ds = data.train_dataset(source, _identity_multicrop(), global_batch_size=4, seed=0, num_epochs=2)
  order = [i for batch in ds for i in _ids(batch)]
  first, second = order[:NUM_IMAGES], order[NUM_IMAGES:]
  assert sorted(first) == sorted(second) == list(range(NUM_IMAGES))
  assert first != second


RECIPE = {
  "channels": 3,
  "global_views": {"count": 2, "size": 16, "scale": (0.3, 1.0)},
  "local_views": {"count": 3, "size": 8, "scale": (0.05, 0.3)},
  "augment": {"color_jitter": 1.0, "grayscale": 0.5, "blur": 1.0, "solarize": 0.5},
}


def test_multicrop_views_shapes_and_determinism(folder_dataset):
  source = data.open_source("unit_images", "train", folder_dataset)
  make = lambda seed: data.train_dataset(
    source, data.multicrop_from_config(RECIPE), global_batch_size=4, seed=seed
  )
  batch = next(iter(make(0)))
  assert batch["global"].shape == (4, 2, 16, 16, 3) and batch["global"].dtype == np.uint8
  assert batch["local"].shape == (4, 3, 8, 8, 3) and batch["label"].shape == (4,)
  again = next(iter(make(0)))
  for key in batch:
    np.testing.assert_array_equal(batch[key], again[key])
  assert not np.array_equal(next(iter(make(1)))["global"], batch["global"])


@pytest.mark.slow
@pytest.mark.parametrize("process_count", [2, 4])
def test_global_batches_do_not_depend_on_the_process_count(folder_dataset, process_count):
  """Hosts' batches concatenated in process order are the 1-process batches: examples and crops."""
  source = data.open_source("unit_images", "train", folder_dataset)
  make = lambda index, count, start=0: iter(
    data.train_dataset(
      source,
      data.multicrop_from_config(RECIPE),
      global_batch_size=8,
      seed=1,
      process_index=index,
      process_count=count,
      start_batch=start,
    )
  )
  single, hosts = make(0, 1), [make(i, process_count) for i in range(process_count)]
  expected = [next(single) for _ in range(4)]  # crosses an epoch boundary (3 batches per epoch)
  for want in expected:
    parts = [next(host) for host in hosts]
    for key in want:
      np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), want[key])
  # Starting at global batch 2 (a resume with another process count) gives batches 2, 3.
  started = [make(i, process_count, start=2) for i in range(process_count)]
  for want in expected[2:]:
    parts = [next(host) for host in started]
    np.testing.assert_array_equal(np.concatenate([p["global"] for p in parts]), want["global"])


def test_restored_iterator_continues_with_the_same_batches(folder_dataset):
  source = data.open_source("unit_images", "train", folder_dataset)
  make = lambda: iter(
    data.train_dataset(source, data.multicrop_from_config(RECIPE), global_batch_size=4, seed=5)
  )
  it = make()
  for _ in range(7):  # crosses an epoch boundary (6 batches per epoch)
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(3)]
  resumed = make()
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])


class _CorruptOne:
  """The real source, with the encoded image of one record replaced by garbage bytes."""

  def __init__(self, source, bad_index):
    self.source, self.bad_index = source, bad_index

  def __len__(self):
    return len(self.source)

  def __getitem__(self, index):
    element = dict(self.source[index])
    if index == self.bad_index:
      element["image"] = b"\x89PNG not really"
    return element


def test_undecodable_record_stops_training_unless_skipped(folder_dataset):
  """By default an error naming the record; with skip_bad_records it is counted and left out.
  (tests/test_bad_records.py damages the ArrayRecord files themselves.)"""
  source = _CorruptOne(data.open_source("unit_images", "train", folder_dataset), bad_index=5)
  ds = data.train_dataset(source, _identity_multicrop(), global_batch_size=1, seed=0, num_epochs=1)
  with pytest.raises(data.BadRecordError, match=r"record 5 of dataset 'unit_images'.*index 5 in"):
    list(ds)
  multicrop = _identity_multicrop(skip_bad_records=True)
  ds = data.train_dataset(source, multicrop, global_batch_size=1, seed=0, num_epochs=1)
  ids = [i for batch in ds for i in _ids(batch)]
  assert len(ids) == NUM_IMAGES - 1 and len(set(ids)) == NUM_IMAGES - 1
  assert len(multicrop.skipped) == 1 and "record 5 of dataset" in multicrop.skipped[0]


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_pipeline_sees_every_example_exactly_once(folder_dataset, process_count):
  source = data.open_source("unit_images", "train", folder_dataset)
  crop = augment.CenterCrop(8, channels=3, crop_fraction=1.0)
  seen, batches = [], []
  for index in range(process_count):
    ds = data.eval_dataset(
      source, crop, global_batch_size=5 * process_count, process_index=index, process_count=process_count
    )
    batches.append(len(ds))
    for batch in ds:
      assert batch["image"].shape == (5, 8, 8, 3)
      seen += [int(v) // 10 for v in batch["image"][batch["valid"], 0, 0, 0]]
  assert len(set(batches)) == 1  # every host runs the same number of steps
  assert sorted(seen) == list(range(NUM_IMAGES))


def test_missing_dataset_says_what_to_run(tmp_path):
  with pytest.raises(data.DataError, match="lejepa_jax.prepare fashion_mnist"):
    data.open_source("fashion_mnist", "train", str(tmp_path))
  with pytest.raises(data.DataError, match="prepare folder --name=not_there"):
    data.open_source("not_there", "train", str(tmp_path))


def test_grayscale_images_go_through_every_op():
  png = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (28, 28), np.uint8))[1]
  multicrop = data.multicrop_from_config(dict(RECIPE, channels=1))
  out = multicrop.random_map({"image": png.tobytes(), "label": 3}, np.random.default_rng(0))
  assert out["global"].shape == (2, 16, 16, 1) and out["local"].shape == (3, 8, 8, 1)


def test_photometric_ops_follow_their_definitions():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (6, 6, 3)).astype(np.uint8)
  always = lambda **kw: augment.Augment(
    **{**dict(flip=0, color_jitter=0, grayscale=0, blur=0, solarize=0), **kw}
  )
  solarized = augment.augment_view(image, always(solarize=1.0), rng)
  np.testing.assert_array_equal(solarized, np.where(image >= 128, 255 - image, image))
  flipped = augment.augment_view(image, always(flip=1.0), rng)
  np.testing.assert_array_equal(flipped, image[:, ::-1])
  gray = augment.augment_view(image, always(grayscale=1.0), rng).astype(float)
  luma = image @ np.array([0.299, 0.587, 0.114])
  assert np.abs(gray[..., 0] - luma).max() <= 1.0 and np.all(gray[..., 0] == gray[..., 2])


@pytest.mark.slow
def test_device_augmentation_is_deterministic_and_in_range():
  views = np.random.default_rng(0).integers(0, 256, (2, 3, 16, 16, 3)).astype(np.uint8)
  aug = augment.Augment(color_jitter=1.0, grayscale=0.5, blur=1.0, solarize=0.5)
  run = jax.jit(lambda v, k: device_augment.augment_views(v, k, aug))
  out = run(views, jax.random.key(0))
  assert out.shape == views.shape and out.dtype == np.float32
  assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
  np.testing.assert_array_equal(out, run(views, jax.random.key(0)))
  off = augment.Augment(color_jitter=0, grayscale=0, blur=0, solarize=0)
  np.testing.assert_allclose(
    device_augment.augment_views(views, jax.random.key(0), off), views / 255.0, rtol=1e-6
  )


def test_local_batches_become_global_sharded_arrays(devices):
  mesh = sharding.make_mesh({"data": 4, "fsdp": 2})
  local = {"global": np.zeros((16, 2, 8, 8, 3), np.uint8), "label": np.arange(16, dtype=np.int32)}
  batch = data.to_global_batch(local, mesh)
  assert batch["global"].shape == (16, 2, 8, 8, 3)
  assert batch["global"].sharding.spec[0] == ("data", "fsdp")
  np.testing.assert_array_equal(batch["label"], np.arange(16))


def test_paper_views_are_the_default():
  multicrop = data.multicrop_from_config({})
  assert (multicrop.global_views.count, multicrop.global_views.size) == (2, 224)
  assert multicrop.global_views.scale == (0.3, 1.0)
  assert (multicrop.local_views.count, multicrop.local_views.size) == (6, 96)
  assert multicrop.local_views.scale == (0.05, 0.3)
  assert data.device_augment_from_config({}) is None
  on_device = data.multicrop_from_config({"augment_on_device": True}).aug
  assert on_device.color_jitter == on_device.blur == on_device.solarize == 0 and on_device.flip == 0.5


def test_image_folder_splits_accept_val_and_skip_hidden_folders(tmp_path, capsys):
  for folder in ("train/cat", "train/.ipynb_checkpoints", "val/cat", "extra"):
    (tmp_path / folder).mkdir(parents=True)
  splits = prepare._folder_splits(str(tmp_path))
  assert splits == {"train": str(tmp_path / "train"), "validation": str(tmp_path / "val")}
  assert "extra" in capsys.readouterr().err  # reported, not silently dropped
  assert prepare._class_dirs(str(tmp_path / "train")) == ["cat"]
  (tmp_path / "validation").mkdir()
  with pytest.raises(ValueError, match="both validation/ and val/"):
    prepare._folder_splits(str(tmp_path))


def test_on_device_blur_of_a_small_view_matches_opencvs_host_blur():
  import cv2

  image = np.random.default_rng(3).integers(0, 256, (28, 28, 3)).astype(np.uint8)
  aug = augment.Augment(blur_sigma=(2.0, 2.0))  # one sigma: the draw does not matter
  got = (
    np.asarray(device_augment._blur(jnp.asarray(image, jnp.float32) / 255, jax.random.key(0), aug)) * 255
  )
  want = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 2.0)  # 13 taps at sigma 2
  inner = slice(6, -6)  # the borders are padded differently
  np.testing.assert_allclose(got[inner, inner], want[inner, inner], atol=0.5)  # of 255
