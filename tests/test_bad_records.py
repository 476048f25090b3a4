"""Bad records: damaged ArrayRecord files and image folders give errors that name the file and the
record and say what to do; with the skip options each bad one is logged, counted and left out."""

import glob
import os
import re
import shutil

import cv2
import numpy as np
import pytest
from array_record.python import array_record_module

from lejepa_jax import data
from lejepa_jax import prepare as prepare_command
from lejepa_jax.data import augment, prepare

NUM_IMAGES = 8
BAD = 3  # the record index (in the split and in its single file) the tests damage


def _value(i):
  return 20 + 10 * i  # no image is black: a zero in the output would be a stand-in


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  """A real TFDS ArrayRecord dataset of 8 constant-colour 8x8 images, 2 classes."""
  root = tmp_path_factory.mktemp("images")
  for i in range(NUM_IMAGES):
    (root / f"class_{i % 2}").mkdir(exist_ok=True)
    cv2.imwrite(str(root / f"class_{i % 2}" / f"{i}.png"), np.full((8, 8, 3), _value(i), np.uint8))
  out = str(tmp_path_factory.mktemp("tfds"))
  prepare.prepare_image_folder("bad_records", str(root), out)
  return out


def _copy(dataset, tmp_path):
  """A copy of the dataset to damage, and its train file (the split has one)."""
  out = str(tmp_path / "tfds")
  shutil.copytree(dataset, out)
  (path,) = glob.glob(os.path.join(out, "bad_records", "*", "bad_records-train.array_record*"))
  return out, path


def _rewrite(path, change, options="group_size:1"):
  """Writes the file's records again, record i replaced by change(i, record)."""
  reader = array_record_module.ArrayRecordReader(path)
  records = reader.read_all()
  reader.close()
  writer = array_record_module.ArrayRecordWriter(path, options)
  for i, record in enumerate(records):
    writer.write(change(i, record))
  writer.close()
  return records


def _damage_chunk(path):
  """Overwrites bytes of record BAD inside the file (its checksummed chunk), as disk damage would.
  The file is first written uncompressed (TFDS writes Brotli) so that the record can be found."""
  records = _rewrite(path, lambda i, record: record, "group_size:1,uncompressed")
  with open(path, "rb") as f:
    content = bytearray(f.read())
  start = content.find(records[BAD])
  assert start > 0 and content.count(records[BAD]) == 1
  middle = start + len(records[BAD]) // 2
  content[middle : middle + 4] = bytes(255 - b for b in content[middle : middle + 4])
  with open(path, "wb") as f:
    f.write(content)


def _not_an_example(path):
  _rewrite(path, lambda i, record: b"\xff" * 16 if i == BAD else record)


def _undecodable_image(path):
  def change(i, record):
    assert record.count(b"\x89PNG\r\n\x1a\n") == 1
    # The same length keeps the TF example valid: only the image inside is damaged.
    return record.replace(b"\x89PNG\r\n\x1a\n", b"NOTAPNG!") if i == BAD else record

  _rewrite(path, change)


DAMAGE = {"chunk": _damage_chunk, "example": _not_an_example, "image": _undecodable_image}
# What each error says of the damage (riegeli's checksum, protobuf's parser, OpenCV).
PROBLEM = {
  "chunk": "cannot be read (RuntimeError: Corrupted Riegeli",
  "example": "cannot be read (DecodeError",
  "image": "the image cannot be decoded",
}


def _ids_by_record(out):
  source = data.open_source("bad_records", "train", out)
  return [(int(augment.decode(source[i]["image"], 3)[0, 0, 0]) - 20) // 10 for i in range(len(source))]


def _identity_multicrop(skip=False):
  full = augment.Views(count=1, size=8, scale=(1.0, 1.0), ratio=(1.0, 1.0))
  none = augment.Views(count=0, size=4, scale=(0.5, 1.0))
  off = augment.Augment(flip=0, color_jitter=0, grayscale=0, blur=0, solarize=0)
  return augment.MultiCrop(full, none, off, channels=3, skip_bad_records=skip)


def _check_message(message, path):
  assert path in message and f"index {BAD} in that file" in message
  assert f"record {BAD} of dataset 'bad_records' split 'train'" in message
  assert "lejepa_jax.prepare folder --name=bad_records" in message
  assert "data.skip_bad_records=True" in message


def _train(out, multicrop, num_workers=0):
  source = data.open_source("bad_records", "train", out)
  return [
    batch
    for batch in data.train_dataset(
      source, multicrop, global_batch_size=2, seed=0, num_epochs=1, num_workers=num_workers
    )
  ]


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_bad_record_stops_training_with_its_file_and_index(dataset, tmp_path, damage):
  out, path = _copy(dataset, tmp_path)
  DAMAGE[damage](path)
  with pytest.raises(data.BadRecordError) as error:
    _train(out, _identity_multicrop())
  _check_message(str(error.value), path)
  assert PROBLEM[damage] in str(error.value)
  assert damage != "image" or "starting b'NOTAPNG!'" in str(error.value)


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_skip_bad_records_logs_counts_and_leaves_them_out(dataset, tmp_path, damage, caplog):
  out, path = _copy(dataset, tmp_path)
  ids = _ids_by_record(out)
  DAMAGE[damage](path)
  multicrop = data.multicrop_from_config(
    {  # the config key reaches the pipeline
      "skip_bad_records": True,
      "global_views": {"count": 1, "size": 8, "scale": (1.0, 1.0), "ratio": (1.0, 1.0)},
      "local_views": {"count": 0, "size": 4, "scale": (0.5, 1.0)},
      "augment": {"flip": 0, "color_jitter": 0, "grayscale": 0, "blur": 0, "solarize": 0},
    }
  )
  batches = _train(out, multicrop)
  seen = sorted((int(v) - 20) // 10 for b in batches for v in b["global"][:, 0, 0, 0, 0])
  assert len(multicrop.skipped) == 1 and path in multicrop.skipped[0]
  # 7 good records make 3 batches of 2: one good record is dropped with the remainder.
  assert len(seen) == 6 and set(seen) < set(ids) - {ids[BAD]}
  assert all(b["global"].min() >= 20 for b in batches)  # nothing stands in for the bad record
  warnings = [r.getMessage() for r in caplog.records if "skipped bad record" in r.getMessage()]
  assert len(warnings) == 1 and path in warnings[0] and f"index {BAD} in that file" in warnings[0]


def test_bad_record_stops_evaluation_or_is_flagged_with_skip(dataset, tmp_path):
  out, path = _copy(dataset, tmp_path)
  ids = _ids_by_record(out)
  _undecodable_image(path)
  source = data.open_source("bad_records", "train", out)
  with pytest.raises(data.BadRecordError) as error:
    list(data.eval_dataset(source, augment.CenterCrop(8, 3, crop_fraction=1.0), global_batch_size=4))
  _check_message(str(error.value), path)
  crop = augment.CenterCrop(8, 3, crop_fraction=1.0, skip_bad_records=True)
  batches = list(data.eval_dataset(source, crop, global_batch_size=4))
  valid = np.concatenate([b["valid"] for b in batches])
  images = np.concatenate([b["image"] for b in batches])
  assert valid.tolist() == [i != BAD for i in range(NUM_IMAGES)]  # flagged, so metrics leave it out
  assert sorted((int(v) - 20) // 10 for v in images[valid, 0, 0, 0]) == sorted(set(ids) - {ids[BAD]})
  assert len(crop.skipped) == 1 and path in crop.skipped[0]


@pytest.fixture
def absl_flags_parsed():
  """grain's worker processes read absl flags, which `python -m lejepa_jax.main` parses."""
  from absl import flags

  parsed = flags.FLAGS.is_parsed()
  flags.FLAGS.mark_as_parsed()
  yield
  if not parsed:
    flags.FLAGS.unparse_flags()


@pytest.mark.slow
def test_bad_record_in_a_grain_worker_reaches_the_main_process_intact(
  dataset, tmp_path, absl_flags_parsed
):
  out, path = _copy(dataset, tmp_path)
  _undecodable_image(path)
  with pytest.raises(data.BadRecordError) as error:
    _train(out, _identity_multicrop(), num_workers=1)
  _check_message(str(error.value), path)


class _AllBad:
  def __len__(self):
    return 12

  def __getitem__(self, index):
    return {"image": b"garbage", "label": 0}


def test_skipping_stops_when_most_records_are_bad():
  """Skipping every record of an endlessly repeated dataset would spin forever: it stops."""
  ds = data.train_dataset(_AllBad(), _identity_multicrop(skip=True), global_batch_size=2, seed=0)
  with pytest.raises(data.BadRecordError, match="the dataset itself is broken"):
    next(iter(ds))


def _png(value):
  return cv2.imencode(".png", np.full((8, 8, 3), value, np.uint8))[1].tobytes()


def _jpeg(value):
  image = np.random.default_rng(value).integers(0, 256, (16, 16, 3), np.uint8)
  return cv2.imencode(".jpg", image)[1].tobytes()


def test_truncated_jpeg_is_undecodable_not_grey():
  jpeg = _jpeg(1)
  assert augment.decode(jpeg, 3) is not None
  cut = jpeg[: len(jpeg) * 3 // 4]
  assert augment.decode(cut, 3) is None
  assert "truncated" in augment.undecodable_reason(cut)
  assert augment.decode(jpeg + b"trailing bytes", 3) is not None


@pytest.fixture
def bad_folder(tmp_path):
  """Class a: 2 good PNGs and one cut short; class b: 2 good PNGs and a JPEG cut in half."""
  root = tmp_path / "images"
  for label, start in (("a", 0), ("b", 2)):
    (root / label).mkdir(parents=True)
    for i in range(start, start + 2):
      (root / label / f"{i}.png").write_bytes(_png(_value(i)))
  (root / "a" / "cut.png").write_bytes(_png(99)[:40])
  jpeg = _jpeg(2)
  (root / "b" / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
  return root


def test_prepare_stops_at_a_bad_image_and_names_it(bad_folder, tmp_path):
  out = str(tmp_path / "tfds")
  with pytest.raises(prepare.BadImageError) as error:
    prepare.prepare_image_folder("folder_with_bad", str(bad_folder), out)
  message = str(error.value)
  assert str(bad_folder / "a" / "cut.png") in message and "--skip_bad_images" in message
  assert "the PNG image is truncated" in message
  assert not glob.glob(os.path.join(out, "folder_with_bad", "*", "*.array_record*"))


def test_prepare_skip_bad_images_lists_and_counts_them(bad_folder, tmp_path, capsys):
  out = str(tmp_path / "tfds")
  prepare_command.main(
    ["folder", "--name=folder_with_bad", f"--source={bad_folder}", f"--out={out}", "--skip_bad_images"]
  )
  err = capsys.readouterr().err
  listed = re.findall(r"skipped bad image (\S+): the (\w+) image is truncated", err)
  assert listed == [
    (str(bad_folder / "a" / "cut.png"), "PNG"),
    (str(bad_folder / "b" / "cut.jpg"), "JPEG"),
  ]
  assert "left out 2 bad image(s)" in err
  source = data.open_source("folder_with_bad", "train", out)
  values = sorted(int(augment.decode(source[i]["image"], 3)[0, 0, 0]) for i in range(len(source)))
  assert values == [_value(i) for i in range(4)]
