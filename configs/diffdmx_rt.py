"""Diff-DMX-RT: the paper's headline model (Table 1, "Diff-DMX-RT-musdb", 99 M parameters).

The conditioner has self-attention in its 4 deepest levels and the 6-layer rotary transformer at the bottleneck.

    diffvox prepare --dataset musdb18hq --manual-dir /path/to/musdb18hq --data-dir ~/tensorflow_datasets
    diffvox train --config configs/diffdmx_rt.py --workdir runs/diffdmx_rt
    diffvox evaluate --checkpoint runs/diffdmx_rt --dataset musdb18hq --split test --out results/diffdmx_rt

Expected (paper): median uSDR 5.38 dB on the MUSDB18-HQ test set (T=50, eta=0.4, cut-off 5 kHz) after 1 M steps
at batch 32 (4 x A100, about one week); 8.77 dB when trained on ~400 h of extra data.
"""

from configs import base


def get_config():
  return base.get_config()
