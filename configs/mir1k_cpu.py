"""mir1k_cpu: the `demo` architecture at MIR-1K's own 16 kHz mono, for about an hour of training on 2 CPU cores.

The run behind docs/results.md (issue 6): trained on the MIR-1K training singers (abjones, amy), validated and
evaluated on the dev singers (Ani, heycat), both at the files' own rate and channel count, so nothing is resampled.
What differs from `configs/demo.py`:
- 16 kHz mono audio and 1 s training crops (16384 samples), 3 s separation chunks;
- the data is `mir1k` (prepared with `--config mir1k_cpu`, split names `train` and `validation`);
- 900 steps of batch 8 (1 s crops: 2 hours of crops, 5 passes over the 23.6 training minutes), warm-up 100
  steps, EMA decay 0.99;
- sampling: the paper's T = 50, eta 0.4, with the cut-off at 2 kHz (the paper's 5 kHz is under the 8 kHz Nyquist
  frequency but leaves little refinement noise at this rate) and one sample per chunk.

    diffvox prepare --dataset mir1k --manual-dir ../shared/data/mir1k --config mir1k_cpu --data-dir data_cache
    diffvox train --config mir1k_cpu --workdir runs/mir1k_cpu --config.data.data_dir=data_cache
    python -m experiments.table2_sampling --checkpoint runs/mir1k_cpu --dataset mir1k --split validation \\
        --data-dir data_cache --out results/mir1k_cpu_sampling
"""

from diffvox_jax.configs import demo


def get_config():
  config = demo.get_config()
  config.data.sample_rate = 16000
  config.data.channels = 1
  config.data.segment = 16384
  config.data.sources = 'mir1k:1.0'

  config.sampler.chunk = 48000  # 3.0 s at 16 kHz, a multiple of 128.
  config.sampler.steps = 50
  config.sampler.num_samples = 1

  config.train.update(num_steps=900, ema_decay=0.99, log_every=50, checkpoint_every=300, eval_every=300)
  config.optim.warmup_steps = 100

  config.eval.dataset = 'mir1k'
  config.eval.split = 'validation'
  return config
