"""The train state: a pytree of the step counter, float32 parameters, their EMA and the optimizer state."""

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from diffvox_jax import config as config_lib
from diffvox_jax.train import optimizer as optimizer_lib


@flax.struct.dataclass
class TrainState:
  """Everything an optimizer step reads and writes (and a checkpoint holds, with the data iterator state).

  Attributes:
    step: int32 scalar, the number of optimizer updates applied so far.
    params: the model's float32 parameters (`variables['params']`).
    ema_params: exponential moving average of `params` (decay `train.ema_decay`), used for inference.
    opt_state: the optax state of `optimizer.make_optimizer(config)`.
  """

  step: jax.Array
  params: Any
  ema_params: Any
  opt_state: optax.OptState


def example_inputs(config: ml_collections.ConfigDict, batch: int = 1) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Zero inputs of the training shapes: x_sigma, mixture `(batch, segment, channels)` and sigma `(batch,)`."""
  shape = (batch, config.data.segment, config.data.channels)
  return jnp.zeros(shape, jnp.float32), jnp.ones((batch,), jnp.float32), jnp.zeros(shape, jnp.float32)


def create_train_state(model: nn.Module, config: ml_collections.ConfigDict, rng: jax.Array) -> TrainState:
  """Initialises parameters (float32 whatever `model.dtype`), EMA = parameters, and the optimizer state.

  Pure, so it can be jitted (with replicated `out_shardings` in `parallel.create_sharded_state`).
  """
  x_sigma, sigma, mixture = example_inputs(config)
  params = model.init(rng, x_sigma, sigma, mixture)['params']
  params = jax.tree.map(lambda p: p.astype(jnp.float32), params)
  opt_state = optimizer_lib.make_optimizer(config).init(params)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, ema_params=params, opt_state=opt_state)


def with_conditioner(state: TrainState, conditioner: Any, source: str) -> TrainState:
  """`state` with the parameters (and their EMA) under `conditioner` replaced by `conditioner`, a pytree of the
  same structure and shapes from the model `source` (named in the error when they differ), placed as the leaves
  they replace."""
  own = state.params['conditioner']
  if jax.tree.structure(own) != jax.tree.structure(conditioner) or any(
      a.shape != b.shape for a, b in zip(jax.tree.leaves(own), jax.tree.leaves(conditioner), strict=True)):
    raise config_lib.ConfigError(f'model.spectral.conditioner_from={source}: its conditioner does not match this '
                                 'model.spectral (hidden, layers, n_fft, channels)')

  def placed():  # a fresh copy per call: params and EMA must not share buffers (the train step donates both).
    return jax.tree.map(lambda new, old: jax.device_put(np.asarray(new, old.dtype), old.sharding), conditioner, own)

  return state.replace(params={**state.params, 'conditioner': placed()},
                       ema_params={**state.ema_params, 'conditioner': placed()})
