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

  config.model.generator.update(channels=8, groups=4, attention_heads=2, attention_head_dim=16, fourier_features=16,
                                modulation_features=64)
  config.model.conditioner.update(channels=8, groups=4, attention_heads=2, attention_head_dim=16,
                                  transformer_layers=2, transformer_dim=64, transformer_heads=4)

  config.sampler.steps = 20
  config.sampler.chunk = 65536  # 3 s at 22.05 kHz.

  config.train.update(batch_size=8, num_steps=2000, log_every=50, checkpoint_every=500, eval_every=500,
                      eval_batches=2, ema_decay=0.99)
  config.optim.peak_lr = 1e-3
  config.optim.warmup_steps = 100

  config.eval.dataset = 'synthetic'
  config.eval.runs = 1
  return config
