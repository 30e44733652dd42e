"""Diff-DMX: the conditioner, the generator and the two auxiliary heads as one Flax module.

    variables = model.init(rng, x_sigma, sigma, mixture)                       # {'params': ...}
    v_hat, conditioning = model.apply(variables, x_sigma, sigma, mixture)      # training
    conditioning = model.apply(variables, mixture, method='condition')         # once per chunk
    v_hat = model.apply(variables, x_sigma, sigma, conditioning.features, method='denoise')  # T times

Parameters: `generator`, `conditioner`, `latent_head` (H_2048) and `reconstruction_head` (H_128).
"""

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from diffvox_jax.models.conditioner import Conditioner, ConditionerSpec
from diffvox_jax.models.generator import Generator, GeneratorSpec


class Conditioning(NamedTuple):
  """The conditioner's outputs for one batch of mixtures.

  Attributes:
    features: one entry per level, `(batch, time / prod(factors[:i]), c_i)` where the generator injects it,
      else None. Depends only on the mixture: compute it once per chunk and reuse it for every sampler step.
    latent_estimate: `(batch, time, channels)` float32, head H_2048 on the bottleneck (Eq. 11); None for the
      spectral models, which have no bottleneck.
    reconstruction_estimate: `(batch, time, channels)` float32, head H_128 on the full-resolution decoder output
      (Eq. 12).
  """

  features: tuple[jax.Array | None, ...]
  latent_estimate: jax.Array | None
  reconstruction_estimate: jax.Array


class DiffDMX(nn.Module):
  """The full model m_theta(x_sigma, sigma, c).

  Attributes:
    generator_spec: generator hyperparameters.
    conditioner_spec: conditioner hyperparameters.
    dtype: compute dtype (parameters stay float32; outputs are float32).
  """

  generator_spec: GeneratorSpec
  conditioner_spec: ConditionerSpec
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.generator = Generator(self.generator_spec, self.dtype)
    self.conditioner = Conditioner(self.conditioner_spec, self.dtype)
    audio_channels = self.conditioner_spec.audio_channels
    # H_2048: a 1x1 conv to channels * hop values per bottleneck step, unfolded to `hop` samples (pixel shuffle).
    self.latent_head = nn.Dense(audio_channels * math.prod(self.conditioner_spec.factors), dtype=self.dtype)
    # H_128: a 1x1 conv on the full-resolution decoder output.
    self.reconstruction_head = nn.Dense(audio_channels, dtype=self.dtype)

  def condition(self, mixture: jax.Array) -> Conditioning:
    """mixture: `(batch, time, channels)`, time a multiple of prod(factors) -> `Conditioning`."""
    output = self.conditioner(mixture)
    batch, time, channels = mixture.shape
    latent_estimate = self.latent_head(output.latent).reshape(batch, time, channels)
    reconstruction_estimate = self.reconstruction_head(output.decoded)
    return Conditioning(output.features, latent_estimate.astype(jnp.float32),
                        reconstruction_estimate.astype(jnp.float32))

  def denoise(self, x_sigma: jax.Array, sigma: jax.Array, features: tuple[jax.Array | None, ...]) -> jax.Array:
    """Predicts v `(batch, time, channels)` float32 from x_sigma `(batch, time, channels)`, sigma `(batch,)`."""
    return self.generator(x_sigma, sigma, tuple(features)).astype(jnp.float32)

  def __call__(self, x_sigma: jax.Array, sigma: jax.Array, mixture: jax.Array) -> tuple[jax.Array, Conditioning]:
    """Returns (v_hat `(batch, time, channels)` float32, `Conditioning`)."""
    conditioning = self.condition(mixture)
    return self.denoise(x_sigma, sigma, conditioning.features), conditioning
