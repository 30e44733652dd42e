"""Model folders with random parameters of a config's shapes, for tests (shapes from `eval_shape`: nothing
compiles)."""

import pathlib

import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from diffvox_jax import config as config_lib
from diffvox_jax import files, inference
from diffvox_jax.models import build_model

# The miniature Diff-DMX of the tests: two levels (factors 2 and 2), one block each, injection at the second, no
# attention and no bottleneck transformer. Tests add their rate, channels, segment and sampler settings.
MINI_MODEL = ('model.factors=(2, 2)', 'model.generator.blocks=(1, 1)', 'model.generator.attention=(False, False)',
              'model.generator.inject=(False, True)', 'model.conditioner.attention=(False, False)',
              'model.conditioner.transformer_layers=0')

# The evaluation tests' miniature: mono (BSS Eval costs a third of stereo) at 8 kHz, and two MIR-1K dev clips.
EVAL_RATE = 8000
EVAL_MINI = MINI_MODEL + (
    f'data.sample_rate={EVAL_RATE}', 'data.channels=1', 'data.segment=1024', 'sampler.chunk=2048', 'sampler.steps=2',
    'sampler.batch_size=4', 'sampler.eta=0.4', 'sampler.cutoff_hz=1000.0', 'eval.dataset="mir1k"',
    'eval.split="validation"', 'eval.runs=2')
EVAL_CLIPS = ('Ani_1_01', 'Ani_2_01')

N_FFT, HOP = 256, 64  # the spectral tests' STFT


def param_shapes(config: ml_collections.ConfigDict):
  """The model's parameter tree as `jax.ShapeDtypeStruct` leaves."""
  audio = jax.ShapeDtypeStruct((1, config.data.segment, config.data.channels), jnp.float32)
  return jax.eval_shape(build_model(config).init, jax.random.key(0), audio, jax.ShapeDtypeStruct((1,), jnp.float32),
                        audio)['params']


def write_random_checkpoint(folder: pathlib.Path, config: ml_collections.ConfigDict) -> pathlib.Path:
  """An exported model folder (`config.json` + `params.msgpack`) with N(0, 0.05) parameters; returns `folder`."""
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: rng.normal(0, 0.05, s.shape).astype(s.dtype), param_shapes(config))
  files.write_atomically(folder / inference.PARAMS_FILE, flax.serialization.msgpack_serialize(params))
  inference.save_config(folder, config)
  return folder


def write_eval_mini(folder: pathlib.Path) -> pathlib.Path:
  """An exported `EVAL_MINI` model with random parameters."""
  return write_random_checkpoint(folder, config_lib.load_config('cpu_tiny', EVAL_MINI))


def tiny_spectral(kind: str, **overrides) -> ml_collections.ConfigDict:
  """`mir1k_<kind>` ('mask' or 'spectral') shrunk to a 256/64 STFT, width 16, one layer, 1024-sample crops;
  `overrides` as `{'section.field': value}`."""
  config = config_lib.load_config(f'mir1k_{kind}')
  config.model.spectral.n_fft, config.model.spectral.hop = N_FFT, HOP
  config.model.spectral.hidden = config.model.spectral.generator_hidden = 16
  config.model.spectral.layers = config.model.spectral.generator_layers = 1
  config.data.segment, config.train.batch_size = 1024, 4
  config.optim.warmup_steps = 1
  for key, value in overrides.items():
    config[key.split('.')[0]][key.split('.')[1]] = value
  return config
