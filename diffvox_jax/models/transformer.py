"""The rotary-position transformer that "enhances" the conditioner's bottleneck (Diff-DMX-RT, paper §5).

The bottleneck (2048 channels at D/128) is projected to `dim`, passed through `layers` pre-LayerNorm transformer
layers (self-attention with rotary position embeddings, then a GELU MLP), normalised, projected back and added
to the bottleneck (residual), so a zero-layer transformer is the identity and the plain variant simply omits it.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from diffvox_jax.models.attention import SelfAttention
from diffvox_jax.models.layers import rematerialised


class TransformerLayer(nn.Module):
  """Pre-LN layer: `x + attention(LN(x))`, then `x + MLP(LN(x))` with a GELU MLP of `mlp_ratio * dim`.

  Attributes:
    heads: attention heads (head_dim = dim // heads).
    mlp_ratio: hidden width of the MLP relative to the model width.
    attention_impl: see `attention.multi_head_attention`.
    attention_block: tile length of the blockwise attention.
    dtype: compute dtype.
  """

  heads: int
  mlp_ratio: int
  attention_impl: str = 'auto'
  attention_block: int = 1024
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: `(batch, tokens, dim)` -> `(batch, tokens, dim)`."""
    dim = x.shape[-1]
    x = SelfAttention(self.heads, dim // self.heads, rotary=True, implementation=self.attention_impl,
                      block=self.attention_block, dtype=self.dtype, name='attention')(x)
    h = nn.LayerNorm(dtype=self.dtype, name='mlp_norm')(x)
    h = nn.gelu(nn.Dense(self.mlp_ratio * dim, dtype=self.dtype, name='mlp_in')(h))
    return x + nn.Dense(dim, dtype=self.dtype, name='mlp_out')(h)


class BottleneckTransformer(nn.Module):
  """Projection to `dim`, `layers` rotary transformer layers, LayerNorm, projection back, residual add.

  Attributes:
    layers: number of transformer layers.
    dim: model width inside the transformer.
    heads: attention heads.
    mlp_ratio: MLP hidden width relative to `dim`.
    attention_impl: see `attention.multi_head_attention`.
    attention_block: tile length of the blockwise attention.
    dtype: compute dtype.
    remat: `jax.checkpoint_policies` name under which each layer is recomputed in the backward pass ('' = none).
  """

  layers: int
  dim: int
  heads: int
  mlp_ratio: int
  attention_impl: str = 'auto'
  attention_block: int = 1024
  dtype: jnp.dtype = jnp.float32
  remat: str = ''

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: `(batch, tokens, channels)` -> `(batch, tokens, channels)`."""
    h = nn.Dense(self.dim, dtype=self.dtype, name='project_in')(x)
    for i in range(self.layers):
      h = rematerialised(TransformerLayer, self.remat)(self.heads, self.mlp_ratio, self.attention_impl,
                                                       self.attention_block, self.dtype, name=f'layer_{i}')(h)
    h = nn.LayerNorm(dtype=self.dtype, name='final_norm')(h)
    return x + nn.Dense(x.shape[-1], dtype=self.dtype, name='project_out')(h)
