"""The `diffvox` command: `diffvox <command> [flags]`, one module per command under `diffvox_jax/commands/`.

Each command module defines `define_flags()` (absl flags, with `--config` as an ml-collections config file so
that `--config.section.field=value` overrides work) and `main(argv)`. Only the chosen command's flags are defined,
so commands never clash.
"""

import importlib
import sys

from absl import app

COMMANDS = {
    'prepare': ('diffvox_jax.commands.prepare', 'build a tfds dataset from a local folder or synthetic songs'),
    'train': ('diffvox_jax.commands.train', 'train a model (data-parallel over every device)'),
    'separate': ('diffvox_jax.commands.separate', 'extract vocals (and instrumental) from audio files'),
    'evaluate': ('diffvox_jax.commands.evaluate', 'score a checkpoint and the baselines on a dataset split'),
    'model-summary': ('diffvox_jax.commands.model_summary', 'print parameter counts per part of a config'),
}


def usage() -> str:
  lines = ['usage: diffvox <command> [flags]   (diffvox <command> --help for its flags)', '', 'commands:']
  lines += [f'  {name:<14} {text}' for name, (_, text) in COMMANDS.items()]
  return '\n'.join(lines)


def resolve_config_argument(args: list[str]) -> list[str]:
  """Lets `--config cpu_tiny` name a config in the project's `configs/` folder as well as a path."""
  from diffvox_jax.config import ConfigError, resolve_config_path

  resolved = list(args)
  for i, arg in enumerate(resolved):
    value, prefix = None, None
    if arg == '--config' and i + 1 < len(resolved):
      value, index, prefix = resolved[i + 1], i + 1, ''
    elif arg.startswith('--config='):
      value, index, prefix = arg.split('=', 1)[1], i, '--config='
    if value is None:
      continue
    try:
      resolved[index] = prefix + str(resolve_config_path(value))
    except ConfigError as error:
      raise SystemExit(f'diffvox: {error}') from None
  return resolved


def main(argv: list[str] | None = None) -> None:
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ('-h', '--help', 'help'):
    print(usage())
    return
  name = argv[1]
  if name not in COMMANDS:
    raise SystemExit(f'diffvox: unknown command {name!r}\n{usage()}')
  module = importlib.import_module(COMMANDS[name][0])
  module.define_flags()
  app.run(module.main, argv=[f'diffvox {name}'] + resolve_config_argument(argv[2:]))


if __name__ == '__main__':
  main()
