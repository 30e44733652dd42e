"""The Diff-DMX network (paper §4 to §6) in Flax linen: `build_model(config)` and `parameter_counts(config)`.

    model = build_model(config)
    variables = model.init(rng, x_sigma, sigma, mixture)
    v_hat, conditioning = model.apply(variables, x_sigma, sigma, mixture)

See `diffdmx.py` for the `condition` / `denoise` split used by the sampler, `generator.py` and `conditioner.py` for
the layouts. Decisions where the paper is silent (parameter counts are checked by `tests/test_models.py`):

- Level layout: encoder level i runs at D / prod(factors[:i]) and ends with its down-conv; the decoder's up-conv
  comes first, so encoder, decoder and conditioner level i share one resolution (UNIVERSE's layout). With the
  paper's factors this puts 2048 conditioner channels at the D/128 bottleneck and 128 at full resolution, the
  widths the paper's heads H_2048 and H_128 are named after.
- Self-attention placement (the "known hot spot" of the design). Read literally, "self-attention in the 4
  deepest levels" attends at D/8 too: 16,384 tokens for a 3 s chunk. XLA's cost analysis of one generator forward
  on a 3 s stereo chunk then gives 2.58 TFLOP (conditioner 3.28 TFLOP), about 650 TFLOP for the paper's T=50 over
  12 s (five 3 s chunks with 20% overlap), which a 12 GB GPU cannot spend in the reported 8.45 s. Our default
  attends only where the sequence is at most D/32 long: levels 6 and 7 (4,096 tokens per 3 s), in the generator
  and in the RT conditioner, whose transformer runs at D/128. Conditioning injection stays at the 4 deepest levels
  (1x1 convs, cheap). One generator forward of a 3 s chunk then costs 0.26 TFLOP (conditioner 0.90 TFLOP, once
  per chunk): 250 generator forwards (T=50 x 5 chunks) are about 66 TFLOP, in line with 8.45 s on a 12 GB GPU.
  Attention levels, heads per level (`attention_heads_per_level`) and widths are config fields:
  `configs/diffdmx_rt_literal.py` reads the paper literally with narrow attention (2 heads) at the D/8 levels of
  both networks, keeping both parameter counts within 5% (its cost: docs/benchmarks.md).
- The paper's "n x n" resampling conv at factor-1 levels (n = 1: a 1x1 conv that resamples nothing) is omitted:
  at levels 1, 4 and 6 it would add 0.17 M parameters to the generator and 2.66 M to the conditioner (encoder and
  decoder), taking the conditioner to 87.5 M, outside 5% of the paper's 82.9 M.
- Parameter budget. Generator (paper 15.9 M, ours 16.06 M): the sigma embedding has 1024 random Fourier channels
  (the paper's "1024-channel random Fourier features") and a 512-wide 3-layer GELU MLP feeding every FiLM (a
  1024-wide one would give 22.1 M); attention is 8 heads x 32; U-Net skips are added (scaled by 1/sqrt(2)); one
  residual block at the bottleneck. Conditioner (paper 82.9 M RT, ours 84.8 M; whole plain model paper 71 M, ours
  72.0 M): UNIVERSE's kernels (5, 3, 3) at full width would give about 90 M for the plain conditioner alone, so the
  residual branch of each block runs at half width (Demucs' compressed residual branch); auxiliary paths are
  GroupNorm -> ReLU -> average pool -> 1x1 conv (see `conditioner.py`); level-6/7 attention is 8 heads x 64; the
  transformer is 6 layers of width 512, 8 heads, MLP ratio 4, with 2048 <-> 512 projections (21 M).
- H_2048 (bottleneck -> full-length stereo) is a 1x1 conv to 2 x 128 channels unfolded to 128 samples per
  bottleneck step (pixel shuffle); H_128 is a 1x1 conv on the full-resolution decoder output.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from diffvox_jax import config as config_lib
from diffvox_jax.models.conditioner import ConditionerSpec
from diffvox_jax.models.diffdmx import Conditioning, DiffDMX
from diffvox_jax.models.generator import GeneratorSpec
from diffvox_jax.models.spectral import SpectralDiffDMX, SpectralSpec

__all__ = ['Conditioning', 'DiffDMX', 'SpectralDiffDMX', 'build_model', 'for_sampling', 'model_kind',
           'parameter_counts']

PARTS = {'generator': ('generator',), 'conditioner': ('conditioner',),
         'aux_heads': ('latent_head', 'reconstruction_head')}


def model_kind(config: ml_collections.ConfigDict) -> str:
  """`config.model.kind`: 'waveform' (the paper's U-Nets; configs saved before the field), 'spectral' or 'mask'."""
  return config.model.get('kind', 'waveform')


def build_model(config: ml_collections.ConfigDict) -> DiffDMX | SpectralDiffDMX:
  """The Flax module of a (validated) config; see the module docstring for how to call it.

  'waveform' is the paper's Diff-DMX; 'spectral' its spectral variant and 'mask' that variant's conditioner alone,
  the discriminative baseline (`models/spectral.py`).
  """
  kind = model_kind(config)
  if kind != 'waveform':
    return SpectralDiffDMX(SpectralSpec.from_config(config), with_generator=kind == 'spectral')
  return DiffDMX(GeneratorSpec.from_config(config), ConditionerSpec.from_config(config),
                 dtype=jnp.dtype(config.model.dtype))


def for_sampling(model: DiffDMX | SpectralDiffDMX | Any) -> Any:
  """The module the sampler runs: a spectral model converts its x0 estimate to v with the exact beta (its floor
  only bounds the training loss); any other module as it is. Same parameters."""
  return model.clone(sampling=True) if isinstance(model, SpectralDiffDMX) else model


def _count(tree) -> int:
  return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree))


def parameter_counts(config: ml_collections.ConfigDict) -> dict[str, int]:
  """Parameters per part, from shapes only (`jax.eval_shape`, nothing allocated).

  Returns:
    `{'generator': n, 'conditioner': n, 'aux_heads': n, 'total': n}`; the generator includes its
    injection layers, the conditioner includes its transformer. The spectral kinds have no aux heads (0) and
    the 'mask' kind no generator (0).
  """
  model = build_model(config)
  hop = config_lib.total_downsampling(config)
  audio = jax.ShapeDtypeStruct((1, hop, config.data.channels), jnp.float32)
  sigma = jax.ShapeDtypeStruct((1,), jnp.float32)
  params = jax.eval_shape(model.init, jax.random.key(0), audio, sigma, audio)['params']
  counts = {part: sum(_count(params.get(name, {})) for name in names) for part, names in PARTS.items()}
  counts['total'] = _count(params)
  return counts
