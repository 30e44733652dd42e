"""Flags and error handling shared by the `diffvox` sub-commands."""

import sys
from typing import Any

import ml_collections
from absl import flags
from ml_collections import config_flags

from diffvox_jax import config as config_lib

# The sampler flags: (flag, config.sampler field). Each defaults to the checkpoint's config when not given.
SAMPLER_FLAGS = (('steps', 'steps'), ('method', 'method'), ('schedule', 'schedule'), ('eta', 'eta'),
                 ('cutoff-hz', 'cutoff_hz'), ('samples', 'num_samples'), ('sigma-start', 'sigma_start'),
                 ('start', 'start'))

FLAGS = flags.FLAGS


def define_config_flag(default: str | None = None) -> None:
  """`--config PATH` (or a bare name from `configs/`) plus `--config.a.b=value` overrides."""
  config_flags.DEFINE_config_file(
      'config', default=default, help_string='ml-collections config file (or a name from configs/).',
      lock_config=True)


def validated_config() -> ml_collections.ConfigDict:
  """The parsed `--config`, validated; exits with one line naming the bad field."""
  if FLAGS.config is None:
    fail('--config is required (for example --config configs/cpu_tiny.py)')
  try:
    return config_lib.validate(FLAGS.config)
  except (TypeError, ValueError) as error:  # ConfigError, or a value of the wrong type (`factors=abc`).
    fail(f'bad config: {" ".join(str(error).split())}')


def fail(message: str, code: int = 2):
  """Prints `diffvox: <message>` on stderr and exits."""
  print(f'diffvox: {message}', file=sys.stderr)
  raise SystemExit(code)


def define_sampler_flags() -> None:
  """The sampler flags of `SAMPLER_FLAGS` (`diffvox separate`, `diffvox evaluate`, the experiments)."""
  flags.DEFINE_integer('steps', None, "sampling steps T (default: the config's sampler.steps); 0 = the model's "
                       'one-pass direct estimate, no diffusion.', lower_bound=0)
  flags.DEFINE_enum('method', None, list(config_lib.SAMPLER_METHODS), "solver: 'ddim' (the paper's), 'dpmpp_2m' "
                    "(DPM-Solver++(2M)) or 'heun' (EDM's second order, two evaluations per inner step).")
  flags.DEFINE_enum('schedule', None, list(config_lib.SCHEDULES), 'sigma grid.')
  flags.DEFINE_float('eta', None, 'stochastic refinement level in [0, 1]; 0 = the deterministic (ODE) solver.',
                     lower_bound=0.0, upper_bound=1.0)
  flags.DEFINE_float('cutoff-hz', None, 'high-pass cut-off of the refinement noise in Hz; 0 = white noise.',
                     lower_bound=0.0)
  flags.DEFINE_integer('samples', None, 'samples per chunk, averaged (ensemble size).', lower_bound=1)
  flags.DEFINE_float('sigma-start', None, 'noise level sampling starts from, in (0, 1]; below 1 an estimate is '
                     'refined (--start).', upper_bound=1.0)
  flags.register_validator('sigma-start', lambda value: value is None or value > 0,
                           message='--sigma-start must be above 0')
  flags.DEFINE_enum('start', None, list(config_lib.SAMPLER_STARTS), "where sampling starts (default: the config's "
                    "sampler.start): 'direct' refines the model's own one-pass estimate from --sigma-start, "
                    "'noise' starts from pure noise (or from an estimate passed in, `diffvox separate --refine`).")


def sampler_overrides() -> dict[str, Any]:
  """The `config.sampler` fields set by the sampler flags on the command line, {field: value}."""
  return {field: FLAGS[flag].value for flag, field in SAMPLER_FLAGS if FLAGS[flag].value is not None}
