"""AdamW with linear warm-up, cosine decay and global-norm clipping, all from `config.optim` (paper §8)."""

import jax
import ml_collections
import optax


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warm-up from 0 to `optim.peak_lr` over `optim.warmup_steps`, then cosine decay to
  `peak_lr * end_lr_factor` at `train.num_steps` (held there afterwards)."""
  optim = config.optim
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=optim.peak_lr,
      warmup_steps=optim.warmup_steps,
      # A run no longer than its warm-up still needs a positive decay length.
      decay_steps=max(config.train.num_steps, optim.warmup_steps + 1),
      end_value=optim.peak_lr * optim.end_lr_factor)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Global-norm clipping (skipped when `optim.grad_clip` is 0) followed by AdamW.

  Weight decay applies to every parameter, as PyTorch's `AdamW` does by default (the paper gives only the value,
  1e-3); like PyTorch, optax scales the decay by the learning rate. A frozen conditioner (`frozen_conditioner`)
  gets no update at all, not even weight decay.
  """
  optim = config.optim
  adamw = optax.adamw(learning_rate_schedule(config), b1=optim.b1, b2=optim.b2, eps=optim.eps,
                      weight_decay=optim.weight_decay)
  if optim.grad_clip > 0:
    adamw = optax.chain(optax.clip_by_global_norm(optim.grad_clip), adamw)
  if frozen_conditioner(config):
    return optax.multi_transform({'train': adamw, 'frozen': optax.set_to_zero()}, _conditioner_labels)
  return adamw


def frozen_conditioner(config: ml_collections.ConfigDict) -> bool:
  """Whether the spectral model's conditioner stays as initialised (`model.spectral.freeze_conditioner`)."""
  return config.model.kind == 'spectral' and bool(config.model.spectral.freeze_conditioner)


def _conditioner_labels(params: dict) -> dict:
  """'frozen' for every leaf under the top-level `conditioner` module, 'train' for the rest."""

  def label(path, _) -> str:
    return 'frozen' if path[0].key == 'conditioner' else 'train'

  return jax.tree_util.tree_map_with_path(label, params)
