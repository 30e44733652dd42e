"""The training tests' stand-ins: a tiny model with the Diff-DMX call signature, a deterministic checkpointable
batch stream, their config, and a driver that runs jitted data-parallel steps over given batches."""

import functools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from diffvox_jax import config as config_lib
from diffvox_jax.train import loop, parallel

SEGMENT, BATCH, CHANNELS = 256, 4, 2


class StandInConditioning(NamedTuple):
  features: tuple
  latent_estimate: jax.Array
  reconstruction_estimate: jax.Array


class StandInModel(nn.Module):
  """Two convolutions with a sigma-dependent scale: enough to have gradients through every argument."""

  @nn.compact
  def __call__(self, x_sigma, sigma, mixture):
    hidden = nn.Conv(8, (3,))(jnp.concatenate([x_sigma, mixture], axis=-1))
    hidden = nn.silu(hidden * (1.0 + nn.Dense(8)(sigma[:, None, None])))
    latent = nn.Conv(CHANNELS, (1,), name='latent_head')(mixture)
    return nn.Conv(CHANNELS, (3,))(hidden), StandInConditioning((), latent, nn.Conv(CHANNELS, (1,))(hidden))


class StandInStream:
  """Deterministic batches `{'vocals', 'accompaniment', 'mixture'}` `(batch, segment, 2)`, batch i of `host`
  from seed (host, i), with a checkpointable position; `nan_at` poisons that batch index."""

  def __init__(self, batch: int = BATCH, nan_at: int | None = None, host: int = 0):
    self.index, self.batch, self.nan_at, self.host = 0, batch, nan_at, host

  def __next__(self):
    generator = np.random.default_rng([self.host, self.index])
    vocals = 0.3 * generator.standard_normal((self.batch, SEGMENT, CHANNELS)).astype(np.float32)
    accompaniment = 0.3 * generator.standard_normal((self.batch, SEGMENT, CHANNELS)).astype(np.float32)
    if self.index == self.nan_at:
      vocals[0, 0, 0] = np.nan
    self.index += 1
    return {'vocals': vocals, 'accompaniment': accompaniment, 'mixture': vocals + accompaniment}

  def get_state(self):
    return {'index': self.index}

  def set_state(self, state):
    self.index = state['index']


def tiny_config(*overrides: str):
  return config_lib.load_config('cpu_tiny', (
      f'data.segment={SEGMENT}', f'train.batch_size={BATCH}', 'optim.warmup_steps=2', 'train.num_steps=8',
      'train.eval_every=0', 'train.log_every=1', 'train.checkpoint_every=2', 'train.keep_checkpoints=10',
      'train.ema_decay=0.9', 'train.eval_audio_clips=0') + overrides)  # the stand-in model cannot sample.


@functools.cache
def compiled_functions(overrides: tuple[str, ...], devices: int):
  """(config, mesh, jitted state init, jitted multi-step) shared by the tests that use the same settings."""
  config, mesh = tiny_config(*overrides), parallel.make_mesh(jax.devices()[:devices])
  return (config, mesh, parallel.make_state_initializer(StandInModel(), config, mesh),
          parallel.make_parallel_train_step(StandInModel(), config, mesh))


def run_steps(batches, devices: int = 2, steps_per_dispatch: int = 1, overrides: tuple[str, ...] = ()):
  """Applies one optimizer step per batch, `steps_per_dispatch` per jitted call, with the keys of
  `loop.train_and_evaluate`; returns (state, losses)."""
  config, mesh, init, multi_step = compiled_functions(overrides, devices)
  init_rng, train_rng, _ = loop.run_keys(config.seed)
  state, losses = init(init_rng), []
  for start in range(0, len(batches), steps_per_dispatch):
    state, metrics = multi_step(state, parallel.stack_and_shard(batches[start:start + steps_per_dispatch], mesh),
                                train_rng)
    losses.extend(np.asarray(metrics['loss']))
  return jax.device_get(state), np.array(losses)
