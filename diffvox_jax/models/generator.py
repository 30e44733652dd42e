"""The generator: a 1-D convolutional U-Net over the stereo waveform, predicting v (paper §4).

Layout (one "level" per entry of `factors`; widths start at `channels` and double at every factor > 1):

    stem conv (audio -> w_1)
    encoder level i:  [inject c_i]  b_i x (ResBlock [+ self-attention])  -> skip_i  -> down-conv by f_i
    bottleneck:       bottleneck_blocks x (ResBlock [+ self-attention])             (at D / prod(factors))
    decoder level i:  up-conv by f_i  -> (h + skip_i) / sqrt(2)  [inject c_i]  b_i x (ResBlock [+ attention])
    head: GroupNorm -> SiLU -> conv (w_1 -> audio)

Encoder level i, its skip, decoder level i and conditioner level i all run at the same resolution
`D / prod(factors[:i])`, so conditioning features and skips line up without resampling. The paper calls the
down/up conv "the last component of a block"; putting the decoder's up-conv first is what makes the layout
symmetric (UNIVERSE does the same). A ResBlock is 2 x (GroupNorm -> SiLU -> conv) then FiLM from sigma, with a
residual connection; sigma reaches every FiLM through 1024 random Fourier features and a 3-layer GELU MLP.
A factor of 1 keeps resolution and width (no conv).
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from diffvox_jax import config as config_lib
from diffvox_jax.models.attention import SelfAttention
from diffvox_jax.models.layers import GeneratorResBlock, InjectFeatures, Resample, SigmaEmbedding, rematerialised


def level_widths(channels: int, factors: tuple[int, ...]) -> tuple[int, ...]:
  """Channels at each level and at the bottleneck: `channels`, doubled after every factor > 1 (len = levels + 1)."""
  widths = [channels]
  for factor in factors:
    widths.append(widths[-1] * 2 if factor > 1 else widths[-1])
  return tuple(widths)


def check_length(time: int, factors: tuple[int, ...]) -> None:
  """Raises ValueError unless `time` is a positive multiple of the total down-sampling prod(factors)."""
  hop = math.prod(factors)
  if time <= 0 or time % hop:
    raise ValueError(f'time length {time} is not a positive multiple of the total down-sampling {hop} '
                     f'(model.factors={tuple(factors)}); pad or cut the audio to a multiple of {hop}')


@dataclasses.dataclass(frozen=True)
class GeneratorSpec:
  """The generator's hyperparameters (built from `config.model` by `from_config`)."""

  channels: int
  factors: tuple[int, ...]
  blocks: tuple[int, ...]
  attention: tuple[bool, ...]
  inject: tuple[bool, ...]
  bottleneck_blocks: int
  bottleneck_attention: bool
  kernel_size: int
  groups: int
  attention_heads: int  # at the bottleneck.
  level_heads: tuple[int, ...]  # at each level.
  attention_head_dim: int
  fourier_features: int
  modulation_features: int
  audio_channels: int
  attention_impl: str
  attention_block: int
  remat: str = ''  # `config.model.remat`: a jax.checkpoint_policies name, or '' for none.

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'GeneratorSpec':
    model, gen = config.model, config.model.generator
    return cls(
        channels=gen.channels, factors=tuple(model.factors), blocks=tuple(gen.blocks),
        attention=tuple(bool(a) for a in gen.attention), inject=tuple(bool(i) for i in gen.inject),
        bottleneck_blocks=gen.bottleneck_blocks, bottleneck_attention=bool(gen.bottleneck_attention),
        kernel_size=gen.kernel_size, groups=gen.groups, attention_heads=gen.attention_heads,
        level_heads=config_lib.level_heads(gen, len(model.factors)), attention_head_dim=gen.attention_head_dim,
        fourier_features=gen.fourier_features,
        modulation_features=gen.modulation_features, audio_channels=config.data.channels,
        attention_impl=model.attention_impl, attention_block=model.attention_block, remat=model.get('remat', ''))


class Generator(nn.Module):
  """The v-prediction U-Net m_theta(x_sigma, sigma, c).

  Attributes:
    spec: hyperparameters.
    dtype: compute dtype (parameters stay float32).
  """

  spec: GeneratorSpec
  dtype: jnp.dtype = jnp.float32

  def _stage(self, h: jax.Array, modulation: jax.Array, count: int, attention: bool, heads: int,
             name: str) -> jax.Array:
    """`count` residual blocks, each followed by self-attention with `heads` heads when `attention`."""
    spec = self.spec
    block, self_attention = rematerialised(GeneratorResBlock, spec.remat), rematerialised(SelfAttention, spec.remat)
    for j in range(count):
      h = block(spec.kernel_size, spec.groups, self.dtype, name=f'{name}_block_{j}')(h, modulation)
      if attention:
        h = self_attention(heads, spec.attention_head_dim, implementation=spec.attention_impl,
                           block=spec.attention_block, dtype=self.dtype, name=f'{name}_attention_{j}')(h)
    return h

  @nn.compact
  def __call__(self, x_sigma: jax.Array, sigma: jax.Array, features: tuple[jax.Array | None, ...]) -> jax.Array:
    """Predicts v.

    Args:
      x_sigma: noisy vocals `(batch, time, audio_channels)`, time a multiple of prod(factors).
      sigma: noise levels `(batch,)` in [0, 1].
      features: conditioner features, one entry per level: `(batch, time / prod(factors[:i]), c_i)` where the
        level is injected, else None.

    Returns:
      v_hat `(batch, time, audio_channels)` in the compute dtype.
    """
    spec = self.spec
    check_length(x_sigma.shape[1], spec.factors)
    if len(features) != len(spec.factors):
      raise ValueError(f'expected {len(spec.factors)} conditioning feature maps (one per level), got {len(features)}')
    missing = [i for i, inject in enumerate(spec.inject) if inject and features[i] is None]
    if missing:
      raise ValueError(f'conditioning features missing for injected levels {missing}')
    widths = level_widths(spec.channels, spec.factors)
    modulation = SigmaEmbedding(spec.fourier_features, spec.modulation_features, self.dtype, name='sigma_embedding')(
        sigma)
    h = nn.Conv(widths[0], (spec.kernel_size,), dtype=self.dtype, name='stem')(x_sigma.astype(self.dtype))

    skips = []
    for i, factor in enumerate(spec.factors):
      if spec.inject[i]:
        h = InjectFeatures(self.dtype, name=f'encoder_{i}_inject')(h, features[i])
      h = self._stage(h, modulation, spec.blocks[i], spec.attention[i], spec.level_heads[i], f'encoder_{i}')
      skips.append(h)
      if factor > 1:
        h = Resample(widths[i + 1], factor, dtype=self.dtype, name=f'encoder_{i}_down')(h)

    h = self._stage(h, modulation, spec.bottleneck_blocks, spec.bottleneck_attention, spec.attention_heads,
                    'bottleneck')

    for i in reversed(range(len(spec.factors))):
      if spec.factors[i] > 1:
        h = Resample(widths[i], spec.factors[i], up=True, dtype=self.dtype, name=f'decoder_{i}_up')(h)
      h = (h + skips[i]) * jnp.asarray(2 ** -0.5, h.dtype)
      if spec.inject[i]:
        h = InjectFeatures(self.dtype, name=f'decoder_{i}_inject')(h, features[i])
      h = self._stage(h, modulation, spec.blocks[i], spec.attention[i], spec.level_heads[i], f'decoder_{i}')

    h = nn.silu(nn.GroupNorm(spec.groups, dtype=self.dtype, name='head_norm')(h))
    return nn.Conv(spec.audio_channels, (spec.kernel_size,), dtype=self.dtype, name='head')(h)
