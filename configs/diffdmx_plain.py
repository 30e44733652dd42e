"""Diff-DMX without attention and enhanced bottleneck in the conditioner ("Diff-DMX-extra", 71 M parameters).

    diffvox train --config configs/diffdmx_plain.py --workdir runs/diffdmx_plain

Like `diffdmx_rt`, it trains on all 100 MUSDB18-HQ training tracks (the validation loss then comes from tracks
that are also trained on; see that config).

Expected (paper): median uSDR 6.00 dB on the MUSDB18-HQ test set when trained on ~400 h of extra data
(T=50); the paper gives no MUSDB18-only figure for this variant.
"""

from diffvox_jax.configs import diffdmx_rt


def get_config():
  config = diffdmx_rt.get_config()
  config.model.conditioner.attention = (False,) * 7
  config.model.conditioner.transformer_layers = 0
  return config
