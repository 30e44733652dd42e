"""The pure train step (paper §2, Eqs. 1 to 3 plus the auxiliary losses of §6) and the matching eval step.

PRNG discipline: the step's key is `fold_in(rng, state.step)` and every example's key is `fold_in(step key,
global example index)`, so sigma and the noise of an example depend only on the seed, the step and the example's
position in the global batch: not on how many devices share the batch, and not on whether the run was resumed.
Dropout (spectral kinds with `model.spectral.dropout > 0`) draws from `fold_in(fold_in(step key, DROPOUT_STREAM),
device index)`, so only its masks depend on the device count.
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from diffvox_jax import diffusion
from diffvox_jax.train import optimizer as optimizer_lib
from diffvox_jax.train.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
TrainStep = Callable[[TrainState, Batch, jax.Array], tuple[TrainState, Metrics]]
DROPOUT_STREAM = 2**31 - 1  # an index no example key uses (those are global example indices).


def example_keys(rng: jax.Array, count: int, axis_name: str | None, first: int | jax.Array = 0,
                 local_batch: int | None = None) -> jax.Array:
  """One key per example, `(count,)` keys, for examples `first ... first + count - 1` of this device's local batch
  of `local_batch` (default `count`), from each example's index in the global batch.

  Under `shard_map` the local batch of device `i` holds global examples `i * local_batch ...`.
  """
  offset = jax.lax.axis_index(axis_name) * (local_batch or count) if axis_name else 0
  return jax.vmap(lambda index: jax.random.fold_in(rng, index))(offset + first + jnp.arange(count))


def draw_sigma_and_noise(keys: jax.Array, shape: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
  """sigma ~ U(0, 1) `(batch,)` and noise ~ N(0, I) `(batch, *shape)` float32, one key per example."""

  def draw(key):
    sigma_key, noise_key = jax.random.split(key)
    return jax.random.uniform(sigma_key, ()), jax.random.normal(noise_key, shape)

  return jax.vmap(draw)(keys)


def make_loss_fn(model: nn.Module, config: ml_collections.ConfigDict,
                 axis_name: str | None = None) -> Callable[[Any, Batch, jax.Array], tuple[jax.Array, Metrics]]:
  """Returns `loss_fn(params, batch, rng, train=False) -> (total, terms)`: the weighted loss of `config.diffusion`.

  `batch` holds `vocals` and `mixture` of shape `(batch, segment, channels)`; `rng` is this step's key. With
  `train`, the model also gets a 'dropout' rng (one per device and micro-batch), so dropout layers act; otherwise
  they do not. A micro-batch passes `first` (its first example's index in the device's batch of `local_batch`), so
  its examples draw the keys they would draw in the whole batch.
  """
  weights = config.diffusion
  scale = config.diffusion.get('data_scale', 1.0)  # the model's units: audio times data_scale (losses too).

  residual = weights.get('target', 'vocals') == 'residual'

  def loss_fn(params, batch: Batch, rng: jax.Array, train: bool = False, first: int | jax.Array = 0,
              local_batch: int | None = None) -> tuple[jax.Array, Metrics]:
    vocals, mixture = batch['vocals'] * scale, batch['mixture'] * scale
    keys = example_keys(rng, vocals.shape[0], axis_name, first, local_batch)
    sigma, noise = draw_sigma_and_noise(keys, vocals.shape[1:])
    device = jax.lax.axis_index(axis_name) if axis_name else 0
    dropout_key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(rng, DROPOUT_STREAM), device), first)
    rngs = {'dropout': dropout_key} if train else {}
    if residual:  # diffuse what the conditioner's direct estimate misses: vocals - H_128(mixture).
      conditioning = model.apply({'params': params}, mixture, method='condition', rngs=rngs)
      target = vocals - jax.lax.stop_gradient(conditioning.reconstruction_estimate)
      v_hat = model.apply({'params': params}, diffusion.add_noise(target, noise, sigma), sigma,
                          conditioning.features, method='denoise', rngs=rngs)
    else:
      target = vocals
      v_hat, conditioning = model.apply({'params': params}, diffusion.add_noise(vocals, noise, sigma), sigma, mixture,
                                        rngs=rngs)
    terms = diffusion.loss_terms(
        v_hat, diffusion.v_target(target, noise, sigma), vocals, conditioning.latent_estimate,
        conditioning.reconstruction_estimate, v_weight=weights.v_weight, latent_weight=weights.latent_weight,
        reconstruction_weight=weights.reconstruction_weight,
        reconstruction_kind=weights.get('reconstruction_loss', 'mse'), mixture=mixture,
        example_weight=diffusion.loss_weight(sigma, weights.get('loss_weighting', 'uniform'),
                                             weights.get('min_snr_gamma', 5.0)))
    return terms.total, {'loss': terms.total, **{name: getattr(terms, name) for name in terms._fields[1:]}}

  return loss_fn


def make_train_step(model: nn.Module, config: ml_collections.ConfigDict, axis_name: str | None = None) -> TrainStep:
  """Returns the pure `train_step(state, batch, rng) -> (state, metrics)`.

  Args:
    model: the Diff-DMX module (`build_model(config)`): `apply` gives `(v_hat, Conditioning)`.
    config: the full config (`optim`, `train.ema_decay`, `diffusion` weights).
    axis_name: the mesh axis the batch is split over when the step runs under `shard_map` (with pmap semantics,
      `check_vma=False`): gradients and metrics are then averaged over it with `lax.pmean`. None for a single,
      unsharded step.

  The returned step takes `batch` with `vocals`, `mixture` `(batch, segment, channels)` and the run's base
  `rng`; its metrics are float32 scalars: `loss` (the weighted total), `v_mse`, `latent_mse`,
  `reconstruction_mse`, `grad_norm` (before clipping) and `learning_rate` (of this update).
  """
  loss_fn = make_loss_fn(model, config, axis_name)
  tx = optimizer_lib.make_optimizer(config)
  schedule = optimizer_lib.learning_rate_schedule(config)
  decay = config.train.ema_decay
  accumulation = int(config.train.get('accumulation_steps', 1))

  def gradients(params, batch: Batch, rng: jax.Array) -> tuple[Any, Metrics]:
    """The gradient of the batch's mean loss and its metrics, over `accumulation` micro-batches in turn."""
    if accumulation == 1:
      return jax.grad(loss_fn, has_aux=True)(params, batch, rng, train=True)
    local = batch['vocals'].shape[0]
    if local % accumulation:
      raise ValueError(f'train.accumulation_steps={accumulation} does not divide the per-device batch of {local}')
    micro = local // accumulation
    micro_batches = jax.tree.map(lambda x: x.reshape((accumulation, micro) + x.shape[1:]), batch)

    def micro_step(index, micro_batch):
      return jax.grad(loss_fn, has_aux=True)(params, micro_batch, rng, train=True, first=index * micro,
                                             local_batch=local)

    def body(total, inputs):
      return jax.tree.map(jnp.add, total, micro_step(*inputs)), None

    first = jax.tree.map(lambda x: x[0], micro_batches)
    zeros = jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype), jax.eval_shape(micro_step, 0, first))
    total, _ = jax.lax.scan(body, zeros, (jnp.arange(accumulation), micro_batches))
    return jax.tree.map(lambda value: value / accumulation, total)

  def train_step(state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, Metrics]:
    grads, metrics = gradients(state.params, batch, jax.random.fold_in(rng, state.step))
    if axis_name:  # per-device gradients of the local batch (pmap semantics)
      grads, metrics = jax.lax.pmean((grads, metrics), axis_name)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema_params = jax.tree.map(lambda ema, new: decay * ema + (1.0 - decay) * new, state.ema_params, params)
    metrics['grad_norm'] = optax.tree.norm(grads)
    metrics['learning_rate'] = jnp.asarray(schedule(state.step), jnp.float32)
    return TrainState(step=state.step + 1, params=params, ema_params=ema_params, opt_state=opt_state), metrics

  return train_step


def make_eval_step(model: nn.Module, config: ml_collections.ConfigDict,
                   axis_name: str | None = None) -> Callable[[Any, Batch, jax.Array], Metrics]:
  """Returns `eval_step(params, batch, rng) -> metrics`: the loss terms without gradients (pmean'd over
  `axis_name` when given). `rng` is used as is, so a fixed key gives a comparable validation curve."""
  loss_fn = make_loss_fn(model, config, axis_name)

  def eval_step(params, batch: Batch, rng: jax.Array) -> Metrics:
    _, metrics = loss_fn(params, batch, rng)
    return jax.lax.pmean(metrics, axis_name) if axis_name else metrics

  return eval_step
