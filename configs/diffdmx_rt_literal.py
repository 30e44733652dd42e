"""Diff-DMX-RT read literally: self-attention in the four deepest levels of both networks.

The paper puts self-attention "in the 4 deepest levels" of generator and conditioner. With its factors those are
levels 4 to 7: two at D/8 (16,384 tokens per 3 s chunk) and two at D/32 (4,096 tokens). `diffdmx_rt` (the
default) attends at the D/32 levels only; this config adds narrow attention at the D/8 levels, 2 heads (of 32
channels in the generator, 64 in the conditioner) where the D/32 levels keep 8, so the parameter counts stay
within 5% of the paper's 15.9 M and 82.9 M. Its cost against the default is in docs/benchmarks.md.

    diffvox train --config diffdmx_rt_literal --workdir runs/diffdmx_rt_literal
"""

from diffvox_jax.configs import base, diffdmx_rt

# Heads per level: 2 at the D/8 levels (4 and 5), 8 at the D/32 levels (6 and 7); unused where attention is off.
LITERAL_HEADS = (8, 8, 8, 2, 2, 8, 8)


def get_config():
  config = diffdmx_rt.get_config()
  for network in (config.model.generator, config.model.conditioner):
    network.attention = base.DEEPEST_FOUR
    network.attention_heads_per_level = LITERAL_HEADS
  return config
