"""Building blocks shared by the generator and the conditioner (Flax linen, NWC: `(batch, time, channels)`).

Every module takes a compute `dtype` ('float32' or 'bfloat16' arrays inside); parameters are always float32.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


def rematerialised(module: type[nn.Module], policy: str) -> type[nn.Module]:
  """`module` recomputed in the backward pass (`nn.remat`) under `jax.checkpoint_policies.<policy>`, or `module`
  itself when `policy` is '' (`config.model.remat`). Parameter names and values are unchanged."""
  return nn.remat(module, policy=getattr(jax.checkpoint_policies, policy)) if policy else module


class PReLU(nn.Module):
  """Parametric ReLU with one learned slope (PyTorch's default, as in UNIVERSE), computed in the input dtype."""

  negative_slope_init: float = 0.25

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    slope = self.param('negative_slope', nn.initializers.constant(self.negative_slope_init), (), jnp.float32)
    return jnp.where(x >= 0, x, slope.astype(x.dtype) * x)


class SigmaEmbedding(nn.Module):
  """Noise level -> modulation vector: random Fourier features of sigma, then a 3-layer GELU MLP.

  The Fourier features are `[sin(2 pi w sigma), cos(2 pi w sigma)]` with `fourier_features / 2` learned
  frequencies `w ~ N(0, 1)` at initialisation (a-unet's learned positional embedding).

  Attributes:
    fourier_features: width of the Fourier feature vector (even).
    features: width of the MLP and of the returned modulation vector.
    dtype: compute dtype.
  """

  fourier_features: int
  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, sigma: jax.Array) -> jax.Array:
    """sigma: `(batch,)` in [0, 1] -> modulation `(batch, features)`."""
    frequencies = self.param('frequencies', nn.initializers.normal(1.0), (self.fourier_features // 2,), jnp.float32)
    angles = 2 * jnp.pi * sigma.astype(jnp.float32)[:, None] * frequencies[None, :]
    h = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1).astype(self.dtype)
    for i in range(3):
      h = nn.gelu(nn.Dense(self.features, dtype=self.dtype, name=f'dense_{i}')(h))
    return h


class FiLM(nn.Module):
  """Feature-wise linear modulation: `x * (1 + scale) + shift`, scale and shift from a linear map of `modulation`."""

  dtype: jnp.dtype = jnp.float32  # compute dtype

  @nn.compact
  def __call__(self, x: jax.Array, modulation: jax.Array) -> jax.Array:
    """x: `(batch, time, channels)`; modulation: `(batch, features)` -> `(batch, time, channels)`."""
    scale_shift = nn.Dense(2 * x.shape[-1], dtype=self.dtype, name='dense')(modulation)
    scale, shift = jnp.split(scale_shift[:, None, :], 2, axis=-1)
    return x * (1 + scale) + shift


class GeneratorResBlock(nn.Module):
  """The generator's residual block: 2 x (GroupNorm -> SiLU -> Conv), then FiLM from sigma, then `x + h`.

  Attributes:
    kernel_size: conv kernel length.
    groups: GroupNorm groups.
    dtype: compute dtype.
  """

  kernel_size: int
  groups: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, modulation: jax.Array) -> jax.Array:
    """x: `(batch, time, channels)`; modulation: `(batch, features)` -> `(batch, time, channels)`."""
    channels = x.shape[-1]
    h = x
    for i in range(2):
      h = nn.silu(nn.GroupNorm(self.groups, dtype=self.dtype, name=f'norm_{i}')(h))
      h = nn.Conv(channels, (self.kernel_size,), dtype=self.dtype, name=f'conv_{i}')(h)
    h = FiLM(dtype=self.dtype, name='film')(h, modulation)
    return x + h


class ConditionerBlock(nn.Module):
  """The conditioner's residual block: 3 x (PReLU -> GroupNorm -> Conv), then `(x + h) / sqrt(2)` (UNIVERSE).

  The residual branch runs at `channels // compression` inside (first conv narrows, last conv widens back),
  the compressed residual branch of Demucs' DConv; compression 1 gives three full-width convs.

  Attributes:
    kernel_sizes: the three conv kernel lengths.
    groups: GroupNorm groups.
    compression: channel reduction inside the residual branch.
    dtype: compute dtype.
  """

  kernel_sizes: tuple[int, int, int]
  groups: int
  compression: int = 1
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: `(batch, time, channels)` -> `(batch, time, channels)`."""
    channels = x.shape[-1]
    inner = channels // self.compression
    widths = (inner, inner, channels)
    h = x
    for i, (kernel, width) in enumerate(zip(self.kernel_sizes, widths, strict=True)):
      h = PReLU(name=f'act_{i}')(h)
      h = nn.GroupNorm(self.groups, dtype=self.dtype, name=f'norm_{i}')(h)
      h = nn.Conv(width, (kernel,), dtype=self.dtype, name=f'conv_{i}')(h)
    return (x + h) * jnp.asarray(2 ** -0.5, x.dtype)


class Resample(nn.Module):
  """Time compression by `factor` with a strided conv, or expansion (`up`) with a transposed conv; kernel = stride =
  factor, so each output step sees exactly its own input samples."""

  features: int  # output channels
  factor: int
  up: bool = False
  dtype: jnp.dtype = jnp.float32  # compute dtype

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: `(batch, time, channels)` -> `(batch, time // factor, features)`, or `time * factor` when `up`."""
    conv = nn.ConvTranspose if self.up else nn.Conv
    return conv(self.features, (self.factor,), strides=(self.factor,), padding='VALID', dtype=self.dtype,
                name='conv')(x)


class InjectFeatures(nn.Module):
  """Conditioning injection: 1x1 conv conditioner -> generator channels, concatenate, 1x1 conv merge."""

  dtype: jnp.dtype = jnp.float32  # compute dtype

  @nn.compact
  def __call__(self, x: jax.Array, features: jax.Array) -> jax.Array:
    """x: `(batch, time, channels)`; features: `(batch, time, cond_channels)` -> `(batch, time, channels)`."""
    channels = x.shape[-1]
    matched = nn.Dense(channels, dtype=self.dtype, name='match')(features.astype(self.dtype))
    return nn.Dense(channels, dtype=self.dtype, name='merge')(jnp.concatenate([x, matched], axis=-1))
