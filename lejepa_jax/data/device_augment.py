"""Photometric augmentation on the accelerator (dm-pix, jitted), for hosts with few CPU cores per chip.

With `data.augment_on_device = True` the host pipeline only decodes, crops, resizes and flips; these
ops then apply colour jitter, grayscale, blur and solarize to every view inside the train step, each
view with its own key (derived from the step key, so resumed runs see the same views).
Colour-jitter ops run in a fixed order (brightness, contrast, saturation, hue) here.
"""

from __future__ import annotations

import dm_pix as pix
import jax
import jax.numpy as jnp

from lejepa_jax.data.augment import Augment


def _maybe(key: jax.Array, probability: float, fn, image: jax.Array) -> jax.Array:
  if probability <= 0:
    return image
  return jnp.where(jax.random.uniform(key) < probability, fn(image), image)


def _color_jitter(image: jax.Array, key: jax.Array, aug: Augment) -> jax.Array:
  keys = jax.random.split(key, 4)
  factor = lambda k, s: jax.random.uniform(k, (), minval=1 - s, maxval=1 + s)
  image = jnp.clip(image * factor(keys[0], aug.brightness), 0, 1)
  image = jnp.clip(pix.adjust_contrast(image, factor(keys[1], aug.contrast)), 0, 1)
  if image.shape[-1] == 3:
    image = jnp.clip(pix.adjust_saturation(image, factor(keys[2], aug.saturation)), 0, 1)
    hue = jax.random.uniform(keys[3], (), minval=-aug.hue, maxval=aug.hue)
    image = pix.adjust_hue(image, hue)
  return image


def _blur(image: jax.Array, key: jax.Array, aug: Augment) -> jax.Array:
  sigma = jax.random.uniform(key, (), minval=aug.blur_sigma[0], maxval=aug.blur_sigma[1])
  # A kernel of about 10% of the side, odd, as is usual for this recipe (23 px at 224 px), and at
  # least the 6 sigma + 1 taps OpenCV's host blur uses for the largest sigma, so small views are
  # blurred as much as on the host (13 taps at sigma 2); at most the side (the kernel is static).
  side = image.shape[0]
  size = max(3, int(0.1 * side) | 1, int(6 * aug.blur_sigma[1] + 1) | 1)
  size = min(size, side if side % 2 else side - 1)
  return pix.gaussian_blur(image, sigma, size)


def augment_view(image: jax.Array, key: jax.Array, aug: Augment) -> jax.Array:
  """One view: float [H, W, C] in [0, 1] -> float [H, W, C] in [0, 1]."""
  keys = jax.random.split(key, 8)
  image = _maybe(keys[0], aug.color_jitter, lambda x: _color_jitter(x, keys[1], aug), image)
  if image.shape[-1] == 3:
    image = _maybe(
      keys[2], aug.grayscale, lambda x: pix.rgb_to_grayscale(x, keep_dims=True) * jnp.ones_like(x), image
    )
  image = _maybe(keys[3], aug.blur, lambda x: _blur(x, keys[4], aug), image)
  threshold = aug.solarize_threshold / 255.0
  return _maybe(keys[5], aug.solarize, lambda x: pix.solarize(x, threshold), image)


def augment_views(views: jax.Array, key: jax.Array, aug: Augment) -> jax.Array:
  """views uint8 [N, V, H, W, C] -> float32 [N, V, H, W, C] in [0, 1], each view its own key."""
  n, v = views.shape[:2]
  keys = jax.random.split(key, n * v).reshape(n, v)
  images = views.astype(jnp.float32) / 255.0
  return jax.vmap(jax.vmap(lambda x, k: augment_view(x, k, aug)))(images, keys)
