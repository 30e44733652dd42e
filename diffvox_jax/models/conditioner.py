"""The conditioner: a UNIVERSE-style convolutional autoencoder of the mixture (paper §5).

Layout (same levels and factors as the generator; widths start at 128 and double at every factor > 1, reaching
2048 at the bottleneck D/128 for the paper's factors):

    stem conv (audio -> c_1)
    encoder level i:  block [+ self-attention]  -> aux_i  -> PReLU -> down-conv by f_i
    bottleneck:       z = (h + sum_i aux_path_i(aux_i)) / sqrt(levels + 1)    [+ rotary transformer (RT)]
    decoder level i:  PReLU -> up-conv by f_i  -> block [+ self-attention]  -> feature_i  (no U-Net skips)

A block is 3 x (PReLU -> GroupNorm -> conv) with a residual `(x + h) / sqrt(2)` (see `ConditionerBlock`).

Auxiliary paths: every encoder block output reaches the bottleneck through GroupNorm -> ReLU -> 1x1 conv to the
bottleneck width. The paper's 1x1 conv cannot change the time resolution; we bring each path to D/128 with an
average pool of window = stride = the remaining down-sampling `prod(factors[i:])`. Average pooling and a 1x1
conv are both linear and act on different axes, so they commute: the path equals "1x1 conv, then exact
down-sampling by averaging", at 1/r of the cost and with no extra parameters (UNIVERSE's strided convs with
kernel = remaining factor would add 33 M parameters for level 1 alone). The paths and the main path are summed
and scaled by 1/sqrt(N+1), as in UNIVERSE.

Outputs: the decoder's block outputs (one per level; kept only where the generator injects them), the bottleneck
latent for the H_2048 head (tapped before or after the transformer, `latent_tap`) and the full-resolution decoder
output (c_1 channels) for the H_128 head.
"""

import dataclasses
import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from diffvox_jax import config as config_lib
from diffvox_jax.models.attention import SelfAttention
from diffvox_jax.models.generator import check_length, level_widths
from diffvox_jax.models.layers import ConditionerBlock, PReLU, Resample, rematerialised
from diffvox_jax.models.transformer import BottleneckTransformer


@dataclasses.dataclass(frozen=True)
class ConditionerSpec:
  """The conditioner's hyperparameters (built from `config.model` by `from_config`)."""

  channels: int
  factors: tuple[int, ...]
  kernel_sizes: tuple[int, int, int]
  groups: int
  compression: int
  attention: tuple[bool, ...]
  level_heads: tuple[int, ...]  # attention heads at each level.
  attention_head_dim: int
  transformer_layers: int
  transformer_dim: int
  transformer_heads: int
  transformer_mlp_ratio: int
  latent_tap: str
  outputs: tuple[bool, ...]
  audio_channels: int
  attention_impl: str
  attention_block: int
  remat: str = ''  # `config.model.remat`: a jax.checkpoint_policies name, or '' for none.

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'ConditionerSpec':
    model, cond = config.model, config.model.conditioner
    return cls(
        channels=cond.channels, factors=tuple(model.factors), kernel_sizes=tuple(cond.kernel_sizes),
        groups=cond.groups, compression=cond.compression, attention=tuple(bool(a) for a in cond.attention),
        level_heads=config_lib.level_heads(cond, len(model.factors)), attention_head_dim=cond.attention_head_dim,
        transformer_layers=cond.transformer_layers, transformer_dim=cond.transformer_dim,
        transformer_heads=cond.transformer_heads, transformer_mlp_ratio=cond.transformer_mlp_ratio,
        latent_tap=cond.latent_tap, outputs=tuple(bool(i) for i in model.generator.inject),
        audio_channels=config.data.channels, attention_impl=model.attention_impl,
        attention_block=model.attention_block, remat=model.get('remat', ''))


class ConditionerOutput(NamedTuple):
  """What the conditioner computes from the mixture."""

  features: tuple[jax.Array | None, ...]  # per level `(batch, time / prod(factors[:i]), c_i)`, None if unused.
  latent: jax.Array  # bottleneck `(batch, time / prod(factors), c_bottleneck)`, input of H_2048.
  decoded: jax.Array  # full-resolution decoder output `(batch, time, c_1)`, input of H_128.


def average_pool(x: jax.Array, window: int) -> jax.Array:
  """Non-overlapping mean over `window` time steps: `(batch, time, channels)` -> `(batch, time // window, ...)`."""
  batch, time, channels = x.shape
  return x.reshape(batch, time // window, window, channels).mean(axis=2)


class Conditioner(nn.Module):
  """The mixture autoencoder C_dec(C_enc(c)).

  Attributes:
    spec: hyperparameters.
    dtype: compute dtype (parameters stay float32).
  """

  spec: ConditionerSpec
  dtype: jnp.dtype = jnp.float32

  def _block(self, h: jax.Array, level: int, name: str) -> jax.Array:
    spec = self.spec
    h = rematerialised(ConditionerBlock, spec.remat)(spec.kernel_sizes, spec.groups, spec.compression, self.dtype,
                                                     name=f'{name}_block')(h)
    if spec.attention[level]:
      attention = rematerialised(SelfAttention, spec.remat)
      h = attention(spec.level_heads[level], spec.attention_head_dim, implementation=spec.attention_impl,
                    block=spec.attention_block, dtype=self.dtype, name=f'{name}_attention')(h)
    return h

  @nn.compact
  def __call__(self, mixture: jax.Array) -> ConditionerOutput:
    """mixture: `(batch, time, audio_channels)`, time a multiple of prod(factors)."""
    spec = self.spec
    check_length(mixture.shape[1], spec.factors)
    widths = level_widths(spec.channels, spec.factors)
    h = nn.Conv(widths[0], (spec.kernel_sizes[0],), dtype=self.dtype, name='stem')(mixture.astype(self.dtype))

    aux_outputs = []
    for i, factor in enumerate(spec.factors):
      h = self._block(h, i, f'encoder_{i}')
      aux_outputs.append(h)
      if factor > 1:
        h = PReLU(name=f'encoder_{i}_act')(h)
        h = Resample(widths[i + 1], factor, dtype=self.dtype, name=f'encoder_{i}_down')(h)

    latent = h
    for i, aux in enumerate(aux_outputs):
      aux = nn.relu(nn.GroupNorm(spec.groups, dtype=self.dtype, name=f'aux_{i}_norm')(aux))
      aux = average_pool(aux, math.prod(spec.factors[i:]))
      latent = latent + nn.Dense(widths[-1], dtype=self.dtype, name=f'aux_{i}_project')(aux)
    latent = latent * jnp.asarray((len(aux_outputs) + 1) ** -0.5, latent.dtype)

    h = latent
    if spec.transformer_layers:
      h = BottleneckTransformer(spec.transformer_layers, spec.transformer_dim, spec.transformer_heads,
                                spec.transformer_mlp_ratio, spec.attention_impl, spec.attention_block, self.dtype,
                                remat=spec.remat, name='transformer')(h)
    if spec.latent_tap == 'after_transformer':
      latent = h

    features = [None] * len(spec.factors)
    for i in reversed(range(len(spec.factors))):
      if spec.factors[i] > 1:
        h = PReLU(name=f'decoder_{i}_act')(h)
        h = Resample(widths[i], spec.factors[i], up=True, dtype=self.dtype, name=f'decoder_{i}_up')(h)
      h = self._block(h, i, f'decoder_{i}')
      if spec.outputs[i]:
        features[i] = h
    return ConditionerOutput(tuple(features), latent, h)
