"""demo: cpu_tiny cut down to train in about 7 minutes on 2 CPU cores, for `make demo` and the shipped model.

What differs from cpu_tiny (same widths, blocks per level, transformer, losses and optimizer):
- 8 kHz audio: the synthetic vocals (Festival's 16 kHz voice) carry little above 4 kHz, and every sample costs;
- four levels with factors (4, 4, 4, 2) instead of the paper's seven (1, 2, 4, 1, 4, 1, 4): the same total
  down-sampling (128), but only one level runs at the full rate; conditioning is injected at the three deepest;
- no self-attention (cpu_tiny attends at D/32; at 1 s crops that buys little and costs a quarter of the step);
- 1 s training crops (8192 samples), 3 s separation chunks;
- audio scaled by 10 inside the diffusion (`diffusion.data_scale`): with raw waveforms the vocals (about 0.05 RMS)
  sit below the noise at almost every training sigma, and after 300 steps the sampler's estimate scored 6 dB
  below the mixture itself; scaled, the same budget separates (see `diffvox_jax/demo.py`);
- EMA decay 0.98 (a short run: 0.99 lags behind), a step budget that fits `make demo`'s minutes on 2 CPU cores;
- sampling: 10 steps with the paper's high-pass refinement noise (eta 0.4, cut-off 2 kHz, under the 4 kHz
  Nyquist frequency), 4 samples averaged per chunk.

    diffvox demo --out demo_out      # renders, trains, separates, scores: see demo_out/report.md
    diffvox prepare --dataset synthetic --num-songs 24 --config demo --data-dir demo_out/data
    diffvox train --config demo --workdir demo_out/run --config.data.data_dir=demo_out/data
"""

from diffvox_jax.configs import cpu_tiny

LEVELS_OFF = (False, False, False, False)


def get_config():
  config = cpu_tiny.get_config()
  config.data.sample_rate = 8000
  config.data.segment = 8192

  config.model.factors = (4, 4, 4, 2)
  gen = config.model.generator
  gen.blocks = (1, 1, 2, 2)
  gen.attention = LEVELS_OFF
  gen.inject = (False, True, True, True)
  config.model.conditioner.attention = LEVELS_OFF

  config.diffusion.data_scale = 10.0

  config.sampler.chunk = 24064  # 3.0 s at 8 kHz, a multiple of 128.
  config.sampler.steps = 10
  config.sampler.cutoff_hz = 2000.0
  config.sampler.num_samples = 4

  config.train.update(num_steps=450, ema_decay=0.98, log_every=25, checkpoint_every=150, eval_every=150)
  return config
