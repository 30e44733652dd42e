"""`diffvox model-summary`: parameter counts per part of a config's model (shapes only, nothing allocated).

    diffvox model-summary --config configs/diffdmx_rt.py
    diffvox model-summary --config cpu_tiny --config.model.conditioner.transformer_layers=0

Prints a table (generator, conditioner, aux heads, total) and, as its last line, `total_params=<integer>`.
The paper's figures: generator 15.9 M, conditioner 82.9 M (RT), whole model 71 M without the conditioner's
attention and transformer (`configs/diffdmx_plain.py`).
"""

from diffvox_jax.commands import common
from diffvox_jax.models import parameter_counts


def define_flags() -> None:
  common.define_config_flag()


def format_table(counts: dict[str, int]) -> str:
  """The parts as aligned rows: name, exact count, millions."""
  rows = [f'{"part":<12} {"parameters":>14} {"millions":>9}']
  rows += [f'{part:<12} {count:>14,} {count / 1e6:>8.2f}M' for part, count in counts.items()]
  return '\n'.join(rows)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    common.fail(f'unexpected arguments: {" ".join(argv[1:])}')
  counts = parameter_counts(common.validated_config())
  print(format_table(counts))
  print(f'total_params={counts["total"]}')
