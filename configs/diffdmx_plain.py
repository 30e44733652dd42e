"""Diff-DMX without attention and enhanced bottleneck in the conditioner ("Diff-DMX-extra", 71 M parameters).

    diffvox train --config configs/diffdmx_plain.py --workdir runs/diffdmx_plain

Expected (paper): median uSDR 6.00 dB on the MUSDB18-HQ test set when trained on ~400 h of extra data
(T=50); the paper gives no MUSDB18-only figure for this variant.
"""

from configs import base


def get_config():
  config = base.get_config()
  config.model.conditioner.attention = (False,) * 7
  config.model.conditioner.transformer_layers = 0
  return config
