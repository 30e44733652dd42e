"""Time-wise multi-head self-attention with a selectable implementation.

Implementations of `multi_head_attention` (all take `(batch, tokens, heads, head_dim)` and agree numerically):
- 'xla': `jax.nn.dot_product_attention(implementation='xla')`, which materialises the full score matrix
  `(batch, heads, tokens, tokens)`: fastest for short sequences.
- 'cudnn': cuDNN flash attention (GPU, bfloat16/float16 only).
- 'blockwise': memory-efficient exact attention. Queries are processed in blocks (`lax.map`), and each query
  block streams over key blocks with an online (running max and sum) softmax, so memory holds one
  `(batch, heads, block, block)` score tile at a time instead of `tokens x tokens`. Each query block is
  rematerialised in the backward pass, so gradients stay memory-efficient too. Works on every device.
- 'auto': what runs best on each backend. TPU: 'xla' (XLA's TPU compiler fuses the plain form well at these
  lengths, up to 16,384 tokens, where a `lax.map` over blocks would serialise it). GPU: 'cudnn' for half-precision
  inputs; otherwise, and on CPU, 'blockwise' when the sequence is longer than the block (the memory fallback),
  else 'xla'. Force one with `model.attention_impl` when memory is short.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from diffvox_jax.config import ATTENTION_IMPLS


def resolve_implementation(implementation: str, tokens: int, block: int, dtype: jnp.dtype,
                           backend: str | None = None) -> str:
  """Maps 'auto' to a concrete implementation for `backend` (default: JAX's), sequence length and dtype."""
  if implementation not in ATTENTION_IMPLS:
    raise ValueError(f'attention implementation {implementation!r} is not one of {ATTENTION_IMPLS}')
  if implementation != 'auto':
    return implementation
  backend = backend or jax.default_backend()
  if backend == 'tpu':
    return 'xla'
  if backend == 'gpu' and jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
    return 'cudnn'
  return 'blockwise' if tokens > block else 'xla'


def _pad_tokens(x: jax.Array, multiple: int) -> jax.Array:
  pad = -x.shape[1] % multiple
  return jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0))) if pad else x


def blockwise_attention(query: jax.Array, key: jax.Array, value: jax.Array, block: int) -> jax.Array:
  """Exact softmax attention computed tile by tile (online softmax); no `tokens x tokens` matrix.

  Args:
    query, key, value: `(batch, tokens, heads, head_dim)`; key and value may have another token count.
    block: tile length for queries and keys (sequences are zero-padded up to a multiple; padded keys are masked).

  Returns:
    `(batch, query_tokens, heads, head_dim)` in the query dtype.
  """
  batch, query_tokens, heads, head_dim = query.shape
  key_tokens = key.shape[1]
  query_block, key_block = min(block, query_tokens), min(block, key_tokens)
  scale = 1.0 / math.sqrt(head_dim)
  accumulate = jnp.promote_types(query.dtype, jnp.float32)  # float32, or float64 for float64 inputs.
  padded_query = _pad_tokens(query * jnp.asarray(scale, query.dtype), query_block)
  padded_key, padded_value = _pad_tokens(key, key_block), _pad_tokens(value, key_block)
  num_query_blocks = padded_query.shape[1] // query_block
  num_key_blocks = padded_key.shape[1] // key_block
  # (num_blocks, batch, block, heads, head_dim) so that lax.map / lax.scan walk over blocks.
  query_blocks = padded_query.reshape(batch, num_query_blocks, query_block, heads, head_dim).swapaxes(0, 1)
  key_blocks = padded_key.reshape(batch, num_key_blocks, key_block, heads, head_dim).swapaxes(0, 1)
  value_blocks = padded_value.reshape(batch, num_key_blocks, key_block, heads, head_dim).swapaxes(0, 1)
  key_valid = (jnp.arange(num_key_blocks * key_block) < key_tokens).reshape(num_key_blocks, key_block)

  @jax.checkpoint
  def attend_query_block(query_tile: jax.Array) -> jax.Array:
    def step(carry, inputs):
      running_max, running_sum, accumulator = carry
      key_tile, value_tile, valid = inputs
      scores = jnp.einsum('bqhd,bkhd->bhqk', query_tile, key_tile, preferred_element_type=accumulate)
      scores = jnp.where(valid[None, None, None, :], scores, -jnp.inf)
      new_max = jnp.maximum(running_max, scores.max(axis=-1))
      correction = jnp.exp(running_max - new_max)
      probabilities = jnp.exp(scores - new_max[..., None])
      running_sum = running_sum * correction + probabilities.sum(axis=-1)
      update = jnp.einsum('bhqk,bkhd->bhqd', probabilities.astype(value_tile.dtype), value_tile,
                          preferred_element_type=accumulate)
      accumulator = accumulator * correction[..., None] + update
      return (new_max, running_sum, accumulator), None

    stats_shape = (batch, heads, query_block)
    initial = (jnp.full(stats_shape, -jnp.inf, accumulate), jnp.zeros(stats_shape, accumulate),
               jnp.zeros(stats_shape + (head_dim,), accumulate))
    (_, running_sum, accumulator), _ = jax.lax.scan(step, initial, (key_blocks, value_blocks, key_valid))
    output = accumulator / running_sum[..., None]
    return output.transpose(0, 2, 1, 3).astype(query.dtype)  # (batch, block, heads, head_dim)

  outputs = jax.lax.map(attend_query_block, query_blocks)
  outputs = outputs.swapaxes(0, 1).reshape(batch, num_query_blocks * query_block, heads, head_dim)
  return outputs[:, :query_tokens]


def multi_head_attention(query: jax.Array, key: jax.Array, value: jax.Array, *, implementation: str = 'auto',
                         block: int = 1024) -> jax.Array:
  """Softmax attention `softmax(q k^T / sqrt(head_dim)) v` per head, no mask.

  Args:
    query, key, value: `(batch, tokens, heads, head_dim)`.
    implementation: one of `config.ATTENTION_IMPLS` (see the module docstring).
    block: tile length of the blockwise implementation (and the 'auto' threshold).

  Returns:
    `(batch, tokens, heads, head_dim)`.
  """
  implementation = resolve_implementation(implementation, query.shape[1], block, query.dtype)
  if implementation == 'blockwise':
    return blockwise_attention(query, key, value, block)
  return jax.nn.dot_product_attention(query, key, value, implementation=implementation)


def rotary_embedding(x: jax.Array, positions: jax.Array, base: float = 10000.0) -> jax.Array:
  """Rotary position embedding (RoPE, Su et al.): rotates channel pairs by position-dependent angles.

  The channel pairs are (i, i + head_dim / 2) with frequencies base^(-2i / head_dim), so that for any shift s,
  `rope(q, m) . rope(k, n)` depends on positions only through `m - n`.

  Args:
    x: `(batch, tokens, heads, head_dim)` with an even head_dim.
    positions: `(tokens,)` positions (integers or floats).
    base: the frequency base.

  Returns:
    The rotated `x`, same shape and dtype.
  """
  half = x.shape[-1] // 2
  compute = jnp.promote_types(x.dtype, jnp.float32)
  frequencies = base ** (-jnp.arange(half, dtype=compute) / half)
  angles = positions.astype(compute)[:, None] * frequencies[None, :]  # (tokens, half)
  cos, sin = jnp.cos(angles)[None, :, None, :], jnp.sin(angles)[None, :, None, :]
  first, second = x[..., :half].astype(compute), x[..., half:].astype(compute)
  rotated = jnp.concatenate([first * cos - second * sin, first * sin + second * cos], axis=-1)
  return rotated.astype(x.dtype)


class SelfAttention(nn.Module):
  """Pre-LayerNorm multi-head self-attention over time with a residual connection.

  Attributes:
    heads: number of heads.
    head_dim: features per head (the inner width is heads * head_dim).
    rotary: apply rotary position embeddings to queries and keys.
    implementation: see `multi_head_attention`.
    block: tile length of the blockwise implementation.
    dtype: compute dtype (parameters stay float32).
  """

  heads: int
  head_dim: int
  rotary: bool = False
  implementation: str = 'auto'
  block: int = 1024
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: `(batch, time, channels)` -> `(batch, time, channels)`."""
    batch, tokens, channels = x.shape
    h = nn.LayerNorm(dtype=self.dtype, name='norm')(x)
    qkv = nn.DenseGeneral((3, self.heads, self.head_dim), dtype=self.dtype, name='qkv')(h)
    query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (batch, tokens, heads, head_dim)
    if self.rotary:
      positions = jnp.arange(tokens)
      query, key = rotary_embedding(query, positions), rotary_embedding(key, positions)
    attended = multi_head_attention(query, key, value, implementation=self.implementation, block=self.block)
    out = nn.DenseGeneral(channels, axis=(-2, -1), dtype=self.dtype, name='out')(attended)
    return x + out
