"""mir1k_split: the spectral Diff-DMX with the capacity in the generator, the paper's split of the work.

In `mir1k_spectral` the conditioner is the whole baseline network (3-layer BLSTM of width 256) and the generator a
smaller stage after it, so the one-pass estimate is already the best the pair can do and sampling only adds
variance (docs/results.md). Here the conditioner is a small mask network (one BLSTM layer of width 128) whose
frame features and mask condition a generator of the baseline's size (3-layer BLSTM of width 256) that also sees
the mixture (`generator_sees_mixture`). The generator diffuses the vocals themselves (`diffusion.target='vocals'`,
raw waveform units) and predicts x0 = istft(a X + (b + mask) M), starting from the conditioner's estimate; the
conditioner learns from L_rec alone. Sampling: T = 10 from noise, 4 samples averaged.

    diffvox train --config mir1k_split --workdir runs/mir1k_split --config.data.data_dir=data_cache
"""

from diffvox_jax.configs import mir1k_spectral


def get_config():
  config = mir1k_spectral.get_config()
  config.model.spectral.update(hidden=128, layers=1, generator_hidden=256, generator_layers=3, residual=True,
                               generator_sees_mixture=True)
  config.diffusion.update(target='vocals', data_scale=1.0)
  config.train.update(num_steps=4000, checkpoint_every=250, eval_every=500)
  return config
