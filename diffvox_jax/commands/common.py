"""Flags and error handling shared by the `diffvox` sub-commands."""

import sys

import ml_collections
from absl import flags
from ml_collections import config_flags

from diffvox_jax import config as config_lib

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
