"""cpu_tiny: the Diff-DMX architecture at small widths and a short segment, for tests and CPU demos.

Same levels, factors, blocks, attention and injection pattern as the paper's RT model; narrow channels, a
2-layer bottleneck transformer, 22.05 kHz audio and 0.74 s training crops so that it trains on 2 CPU cores.

    diffvox prepare --dataset synthetic --num-songs 24 --config configs/cpu_tiny.py --data-dir data_cache
    diffvox train --config configs/cpu_tiny.py --workdir runs/tiny --config.data.data_dir=data_cache
"""

from diffvox_jax.configs import base


def get_config():
  config = base.get_config()
  config.data.sample_rate = 22050
  config.data.segment = 16384
  config.data.sources = 'synthetic:1.0'

  gen = config.model.generator
  gen.channels = 8
  gen.attention_heads = 2
  gen.attention_head_dim = 16
  gen.fourier_features = 16
  gen.modulation_features = 64
  gen.groups = 4

  cond = config.model.conditioner
  cond.channels = 8
  cond.groups = 4
  cond.attention_heads = 2
  cond.attention_head_dim = 16
  cond.transformer_layers = 2
  cond.transformer_dim = 64
  cond.transformer_heads = 4

  config.sampler.steps = 20
  config.sampler.chunk = 65536  # 3 s at 22.05 kHz.

  config.train.batch_size = 8
  config.train.num_steps = 2000
  config.train.log_every = 50
  config.train.checkpoint_every = 500
  config.train.eval_every = 500
  config.train.eval_batches = 2
  config.train.ema_decay = 0.99
  config.optim.peak_lr = 1e-3
  config.optim.warmup_steps = 100

  config.eval.dataset = 'synthetic'
  config.eval.runs = 1
  return config
