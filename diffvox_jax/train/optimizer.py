"""AdamW with linear warm-up, cosine decay and global-norm clipping, all from `config.optim` (paper §8)."""

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
  1e-3); like PyTorch, optax scales the decay by the learning rate.
  """
  optim = config.optim
  adamw = optax.adamw(learning_rate_schedule(config), b1=optim.b1, b2=optim.b2, eps=optim.eps,
                      weight_decay=optim.weight_decay)
  if optim.grad_clip > 0:
    return optax.chain(optax.clip_by_global_norm(optim.grad_clip), adamw)
  return adamw
