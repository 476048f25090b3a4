"""Host-side multi-crop augmentation (OpenCV on uint8 HWC images), as a grain random map.

Per image: V_g global and V_l local random-resized crops, each with horizontal flip, colour jitter
(brightness, contrast, saturation, hue in random order), grayscale, Gaussian blur and solarize, each with
its own probability (LeJEPA's DINO-style recipe). All randomness comes from the numpy Generator grain
passes per (seed, example index), so a resumed run sees exactly the same views.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import grain
import numpy as np

# Each grain worker process augments with one OpenCV thread: parallelism comes from the workers.
cv2.setNumThreads(1)


@dataclasses.dataclass(frozen=True)
class Views:
  """One group of same-sized crops."""

  count: int
  size: int
  scale: tuple[float, float]
  ratio: tuple[float, float] = (3 / 4, 4 / 3)


@dataclasses.dataclass(frozen=True)
class Augment:
  """Photometric augmentation probabilities and strengths (0 disables an op)."""

  flip: float = 0.5
  color_jitter: float = 0.8
  brightness: float = 0.4
  contrast: float = 0.4
  saturation: float = 0.2
  hue: float = 0.1
  grayscale: float = 0.2
  blur: float = 0.5
  blur_sigma: tuple[float, float] = (0.1, 2.0)
  solarize: float = 0.2
  solarize_threshold: int = 128

  def geometric_only(self) -> Augment:
    """The same flips, with every photometric op off (they then run on the device)."""
    return Augment(flip=self.flip, color_jitter=0.0, grayscale=0.0, blur=0.0, solarize=0.0)


def decode(data: bytes | np.ndarray, channels: int) -> np.ndarray | None:
  """PNG/JPEG bytes (or an already decoded array) -> uint8 [H, W, channels]; None if undecodable.

  A JPEG cut short also counts as undecodable: OpenCV would return it with its missing part grey.
  """
  if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 3:
    image = data
  else:
    buffer = np.frombuffer(data, np.uint8)
    if not buffer.size or _truncated_jpeg(buffer):
      return None
    flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR_RGB
    image = cv2.imdecode(buffer, flag)
    if image is None:
      return None
  image = image if image.ndim == 3 else image[..., None]
  if image.shape[-1] == channels:
    return image
  if channels == 1:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None]
  return np.repeat(image, 3, axis=-1)


def _truncated_jpeg(buffer: np.ndarray) -> bool:
  """A JPEG whose last scan has no end-of-image marker after it. (Entropy-coded data escapes 0xFF,
  so the marker cannot occur inside a scan; bytes appended after a complete image are fine.)"""
  if buffer[:2].tobytes() != b"\xff\xd8":
    return False
  data = buffer.tobytes()
  return b"\xff\xd9" not in data[max(data.rfind(b"\xff\xda"), 0) :]


def undecodable_reason(data) -> str:
  """Why `decode` gave None for `data`, for error messages."""
  try:
    buffer = np.frombuffer(data, np.uint8)
  except (TypeError, ValueError):
    return f"the image is a {type(data).__name__}, not encoded image bytes"
  raw = buffer.tobytes()
  if not raw:
    return "the image is empty (0 bytes)"
  if _truncated_jpeg(buffer):
    return f"the JPEG image is truncated ({len(raw)} bytes, no end-of-image marker)"
  if raw.startswith(b"\x89PNG\r\n\x1a\n") and b"IEND" not in raw[-12:]:
    return f"the PNG image is truncated ({len(raw)} bytes, no IEND chunk at the end)"
  return (
    f"the image cannot be decoded ({len(raw)} bytes starting {raw[:8]!r}; a PNG or JPEG "
    "OpenCV can read was expected)"
  )


class UndecodableImage(ValueError):
  """Image bytes that cannot be decoded (the pipelines name the record before this can happen)."""


def decode_or_raise(data, channels: int) -> np.ndarray:
  """`decode`, raising UndecodableImage with the reason instead of returning None."""
  image = decode(data, channels)
  if image is None:
    raise UndecodableImage(undecodable_reason(data))
  return image


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  shrink = height < image.shape[0] or width < image.shape[1]
  # Area averaging when shrinking avoids aliasing; bicubic when enlarging.
  out = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
  return out if out.ndim == 3 else out[..., None]


def random_resized_crop(image: np.ndarray, views: Views, rng: np.random.Generator) -> np.ndarray:
  """Crop of random area (fraction `views.scale`) and aspect ratio, resized to views.size square."""
  height, width = image.shape[:2]
  area = height * width
  log_ratio = (math.log(views.ratio[0]), math.log(views.ratio[1]))
  for _ in range(10):
    target = area * rng.uniform(*views.scale)
    aspect = math.exp(rng.uniform(*log_ratio))
    w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
    if 0 < w <= width and 0 < h <= height:
      top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
      break
  else:  # central crop at the nearest allowed aspect ratio
    aspect = min(max(width / height, views.ratio[0]), views.ratio[1])
    w, h = (
      (width, round(width / aspect)) if width / height < aspect else (round(height * aspect), height)
    )
    w, h = min(w, width), min(h, height)
    top, left = (height - h) // 2, (width - w) // 2
  return _resize(image[top : top + h, left : left + w], views.size, views.size)


def _lut(image: np.ndarray, table: np.ndarray) -> np.ndarray:
  out = cv2.LUT(image, np.clip(table, 0, 255).astype(np.uint8))
  return out if out.ndim == 3 else out[..., None]


def _gray(image: np.ndarray) -> np.ndarray:
  return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.shape[-1] == 3 else image[..., 0]


def color_jitter(image: np.ndarray, aug: Augment, rng: np.random.Generator) -> np.ndarray:
  """Brightness, contrast, saturation and hue jitter in random order (saturation/hue need RGB)."""
  levels = np.arange(256, dtype=np.float32)
  for op in rng.permutation(4):
    if op == 0 and aug.brightness:
      image = _lut(image, levels * rng.uniform(1 - aug.brightness, 1 + aug.brightness))
    elif op == 1 and aug.contrast:
      mean = float(_gray(image).mean())
      factor = rng.uniform(1 - aug.contrast, 1 + aug.contrast)
      image = _lut(image, (levels - mean) * factor + mean)
    elif op == 2 and aug.saturation and image.shape[-1] == 3:
      gray = cv2.cvtColor(_gray(image), cv2.COLOR_GRAY2RGB)
      factor = rng.uniform(1 - aug.saturation, 1 + aug.saturation)
      image = cv2.addWeighted(image, factor, gray, 1 - factor, 0)
    elif op == 3 and aug.hue and image.shape[-1] == 3:
      hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)  # uint8 hue in [0, 180)
      shift = int(round(rng.uniform(-aug.hue, aug.hue) * 180))
      hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + shift) % 180).astype(np.uint8)
      image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
  return image


def augment_view(image: np.ndarray, aug: Augment, rng: np.random.Generator) -> np.ndarray:
  """Flip, colour jitter, grayscale, blur and solarize, each with its probability: uint8 HWC."""
  if rng.random() < aug.flip:
    image = image[:, ::-1]
  if rng.random() < aug.color_jitter:
    image = color_jitter(np.ascontiguousarray(image), aug, rng)
  if image.shape[-1] == 3 and rng.random() < aug.grayscale:
    image = cv2.cvtColor(_gray(np.ascontiguousarray(image)), cv2.COLOR_GRAY2RGB)
  if rng.random() < aug.blur:
    blurred = cv2.GaussianBlur(np.ascontiguousarray(image), (0, 0), rng.uniform(*aug.blur_sigma))
    image = blurred if blurred.ndim == 3 else blurred[..., None]
  if rng.random() < aug.solarize:
    levels = np.arange(256)
    image = _lut(
      np.ascontiguousarray(image), np.where(levels >= aug.solarize_threshold, 255 - levels, levels)
    )
  return np.ascontiguousarray(image)


class MultiCrop(grain.transforms.RandomMap):
  """{"image": bytes, "label": int} -> {"global": [Vg, H, W, C], "local": [Vl, h, w, C], "label"}.

  An image that cannot be decoded raises. `pipeline.train_dataset` decodes each record before this
  map, where it can name it: it raises an error naming the record, or with `skip_bad_records` logs
  it, leaves it out and appends its description to `skipped` (in the process that read it: each
  grain worker keeps its own list).
  """

  def __init__(
    self,
    global_views: Views,
    local_views: Views,
    aug: Augment,
    channels: int,
    image_key: str = "image",
    label_key: str = "label",
    skip_bad_records: bool = False,
  ):
    self.global_views, self.local_views, self.aug = global_views, local_views, aug
    self.channels, self.image_key, self.label_key = channels, image_key, label_key
    self.skip_bad_records = skip_bad_records
    self.skipped: list[str] = []

  def random_map(self, element: dict, rng: np.random.Generator) -> dict:
    image = decode_or_raise(element[self.image_key], self.channels)
    out = {"label": np.int32(element.get(self.label_key, -1))}
    for name, views in (("global", self.global_views), ("local", self.local_views)):
      crops = [
        augment_view(random_resized_crop(image, views, rng), self.aug, rng) for _ in range(views.count)
      ]
      out[name] = (
        np.stack(crops) if crops else np.zeros((0, views.size, views.size, self.channels), np.uint8)
      )
    return out


class CenterCrop(grain.transforms.Map):
  """Evaluation view: resize the short side to size / crop_fraction, then a central size x size crop.

  An image that cannot be decoded raises; `pipeline.eval_dataset` names the record first, or with
  `skip_bad_records` logs it and yields `invalid()` in its place (counted in `skipped`), so the
  example count stays exact and the metrics leave it out.
  """

  def __init__(
    self,
    size: int,
    channels: int,
    crop_fraction: float = 0.875,
    image_key: str = "image",
    label_key: str = "label",
    skip_bad_records: bool = False,
  ):
    self.size, self.channels, self.crop_fraction = size, channels, crop_fraction
    self.image_key, self.label_key = image_key, label_key
    self.skip_bad_records = skip_bad_records
    self.skipped: list[str] = []

  def invalid(self) -> dict:
    """The flagged (valid = False) stand-in for a bad record skipped in evaluation."""
    return {
      "image": np.zeros((self.size, self.size, self.channels), np.uint8),
      "label": np.int32(-1),
      "valid": np.bool_(False),
    }

  def map(self, element: dict) -> dict:
    image = decode_or_raise(element[self.image_key], self.channels)
    height, width = image.shape[:2]
    short = max(self.size, round(self.size / self.crop_fraction))
    scale = short / min(height, width)
    resized = _resize(image, max(self.size, round(height * scale)), max(self.size, round(width * scale)))
    top, left = (resized.shape[0] - self.size) // 2, (resized.shape[1] - self.size) // 2
    return {
      "image": np.ascontiguousarray(resized[top : top + self.size, left : left + self.size]),
      "label": np.int32(element.get(self.label_key, -1)),
      "valid": np.bool_(True),
    }
