"""The `diffvox` command: `diffvox <command> [flags]`, one module per command under `diffvox_jax/commands/`.

Each command module defines `define_flags()` (absl flags, with `--config` as an ml-collections config file so
that `--config.section.field=value` overrides work) and `main(argv)`; its docstring is its help (first line: what
it does; indented lines: examples; the next paragraph: the description), and optional `USAGE` (the arguments after
the command) and `FLAG_GROUPS` (`((title, (flag, ...)), ...)`) shape `diffvox <command> --help`; `DEFAULT_CONFIG`
names the config used when the command line gives no `--config`. Only the chosen
command's flags are defined, so commands never clash.

Conventions every command follows: quiet by default (library logging at warning; `--verbose` for info), a
command-line mistake is one line on stderr and exit status 2, Ctrl-C is one line and exit status 130.
"""

import importlib
import re
import sys
import textwrap
import types

from absl import app, flags, logging

from diffvox_jax.commands.common import fail

COMMANDS = {
    'separate': ('diffvox_jax.commands.separate', 'extract vocals (and instrumental) from audio files'),
    'models': ('diffvox_jax.commands.models', 'list the models shipped in the package'),
    'prepare': ('diffvox_jax.commands.prepare', 'build a tfds dataset from a local folder or synthetic songs'),
    'train': ('diffvox_jax.commands.train', 'train a model (data-parallel over every device)'),
    'evaluate': ('diffvox_jax.commands.evaluate', 'score a checkpoint and the baselines on a dataset split'),
    'demo': ('diffvox_jax.commands.demo', 'the whole job on synthetic songs: prepare, train, separate, report'),
    'model-summary': ('diffvox_jax.commands.model_summary', 'print parameter counts per part of a config'),
}
INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
HELP_WIDTH = 100

FLAGS = flags.FLAGS


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
      fail(str(error))
  return resolved


def with_default_config(module, args: list[str]) -> list[str]:
  """`args` with `--config <module.DEFAULT_CONFIG>` first when the command has a default config and `args` name
  none (ml-collections applies `--config.` overrides only to a config named on the command line)."""
  default = getattr(module, 'DEFAULT_CONFIG', None)
  if default is None or any(arg == '--config' or arg.startswith('--config=') for arg in args):
    return args
  return ['--config', default, *args]


def wants_help(args: list[str]) -> bool:
  """Whether `-h`/`--help` comes before any `--` (after which arguments are inputs)."""
  head = args[:args.index('--')] if '--' in args else args
  return any(arg in ('-h', '--help', '-help') for arg in head)


# --- help ---------------------------------------------------------------------------------------------------------


def command_help(name: str, module: types.ModuleType, own_flags: list[str]) -> str:
  """Usage line, description, flag groups with defaults and examples, from the module's docstring and flags."""
  doc = (module.__doc__ or '').strip()
  first, _, rest = doc.partition('\n')
  summary = re.sub(r'^`[^`]*`:\s*', '', first)
  examples = [line.strip() for line in rest.splitlines() if line.startswith('    diffvox ')]
  paragraphs = [p.strip('\n') for p in re.split(r'\n[ \t]*\n', rest)]
  paragraphs = [p for p in paragraphs if p.strip() and not p.startswith('    ')]
  lines = [f'usage: diffvox {name} {getattr(module, "USAGE", "[flags]")}', '', summary]
  if paragraphs:
    lines += [''] + textwrap.wrap(' '.join(paragraphs[0].split()), HELP_WIDTH)
  grouped = [(title, [f for f in names if f in own_flags]) for title, names in getattr(module, 'FLAG_GROUPS', ())]
  listed = {f for _, names in grouped for f in names}
  grouped.append(('flags' if not listed else 'other flags', [f for f in own_flags if f not in listed]))
  grouped.append(('general', ['verbose']))
  for title, names in grouped:
    if names:
      lines += ['', f'{title}:'] + [describe_flag(FLAGS[f]) for f in names]
  lines.append(f'{"  -h, --help":<30}this help.')
  if examples:
    lines += ['', 'examples:'] + [f'  {example}' for example in examples[:2]]
  return '\n'.join(lines)


def describe_flag(flag: flags.Flag) -> str:
  """`  -s, --name  help. Default: value.`, wrapped; booleans as `--[no]name`."""
  short = f'-{flag.short_name}, ' if flag.short_name else ''
  left = f'  {short}--{"[no]" if flag.boolean else ""}{flag.name}'
  text = flag.help.rstrip('.') + '.'  # absl starts an enum's help with its values, `<a|b>: `.
  if flag.default not in (None, '') and not (flag.boolean and flag.default is False):
    text += f' Default: {flag.default_as_str.strip(chr(39))}.'
  body = textwrap.wrap(text, HELP_WIDTH - 30)
  if len(left) > 28:
    return '\n'.join([left] + [' ' * 30 + line for line in body])
  return '\n'.join([f'{left:<30}{body[0]}'] + [' ' * 30 + line for line in body[1:]])


# --- running a command ----------------------------------------------------------------------------------------------


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parsing, with a mistake as one line naming the flag (exit status 2). `--config.a.b=value` overrides are
  applied here too (ml-collections parses some at once and applies the rest when the config is first read)."""
  try:
    remaining = FLAGS(argv)
    if 'config' in FLAGS and FLAGS['config'].present:
      FLAGS.config  # noqa: B018
  except flags.Error as error:
    fail(' '.join(str(error).split()))
  except (AttributeError, KeyError, TypeError, ValueError) as error:
    fail(bad_override(argv, error))
  return remaining


def bad_override(argv: list[str], error: Exception) -> str:
  """One line naming the `--config.` override behind `error` (the one whose last field it names, else the first)."""
  overrides = [arg.split('=', 1)[0] for arg in argv if arg.startswith('--config.')]
  field = str(error).strip('"\'')
  named = [override for override in overrides if override.rsplit('.', 1)[-1] == field]
  return f'{(named or overrides or ["--config"])[0]}: no such config field or a bad value ({field})'


def define_global_flags() -> None:
  """The flags of every command (besides `-h/--help`, which `run` answers before parsing)."""
  flags.DEFINE_bool('verbose', False, 'log what the libraries do (info level) and what JAX found.')


def run(name: str, args: list[str]) -> None:
  module = importlib.import_module(COMMANDS[name][0])
  before = set(FLAGS)
  module.define_flags()
  own_flags = list(dict.fromkeys(FLAGS[f].name for f in FLAGS if f not in before))
  define_global_flags()
  if wants_help(args):
    print(command_help(name, module, own_flags))
    return

  def main(argv: list[str]) -> None:
    if not FLAGS.verbose and not FLAGS['verbosity'].present:
      logging.set_verbosity(logging.WARNING)  # orbax, tfds and JAX's backend search log at info level
    module.main(argv)

  try:
    app.run(main, argv=[f'diffvox {name}'] + resolve_config_argument(with_default_config(module, args)),
            flags_parser=parse_flags)
  except KeyboardInterrupt:  # Ctrl-C, at start-up or in the command: one line (writers clean up on the way out).
    fail('interrupted', code=INTERRUPTED)


def main(argv: list[str] | None = None) -> None:
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ('-h', '--help', 'help'):
    print(usage())
    return
  name = argv[1]
  if name not in COMMANDS:
    fail(f'unknown command {name!r} (commands: {", ".join(COMMANDS)})')
  run(name, argv[2:])


if __name__ == '__main__':
  main()
