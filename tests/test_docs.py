"""The user guide stays true: every command, flag, config field, make target, file and function that README.md and
docs/*.md name must exist.

- `diffvox <command> ...` lines are parsed by absl exactly as `diffvox` would parse them: the command module's
  `define_flags()` on the global flag registry (removed again afterwards), `--config NAME` resolved as `cli.py`
  does, `--config.a.b=v` overrides applied by ml-collections and the result validated by `config.validate`.
- `python -m <module>` lines: the module exists; when it defines absl flags they are parsed the same way.
- `python tools/<script>.py` lines: the script exists and defines every flag used (its argparse options).
- `--override a.b=v` and `--set a.b=v1,v2` name real config fields; `make <target>` names a Makefile target.
- File paths of the repository written in backticks or as Markdown links exist; dotted names such as
  `diffvox_jax.sampler.step_coefficients` name a module and a function, class or method defined in it.
"""

import ast
import contextlib
import functools
import importlib
import pathlib
import re
import shlex
import sys

import ml_collections
import pytest
from absl import flags

from diffvox_jax import cli
from diffvox_jax import config as config_lib

REPO = pathlib.Path(__file__).resolve().parent.parent
DOCS = [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md'))]
PYTHONS = ('python', 'python3', '.venv/bin/python')
DIFFVOX = ('diffvox', '.venv/bin/diffvox')
IGNORED_PROGRAMS = ('cd', 'source', 'sudo', 'pip', '.venv/bin/pip', 'gcloud', 'tensorboard', 'apt-get', 'ffmpeg')
PROGRAMS = (*DIFFVOX, *PYTHONS, 'make', *IGNORED_PROGRAMS)
REPO_DIRS = ('diffvox_jax', 'configs', 'experiments', 'tools', 'tests', 'docs', '.ci')
PACKAGE_DIRS = ('models', 'data', 'train', 'commands')  # written relative to diffvox_jax/ in the docs
REPO_FILES = ('Makefile', 'setup.cfg', 'pyproject.toml', 'README.md')
POSITIONAL_COMMANDS = ('separate',)  # the only commands that take arguments besides flags
ABSL_BUILTIN = ('help', 'helpfull', 'helpshort', 'helpxml', 'flagfile', 'undefok', 'verbosity', 'v',
                'logtostderr', 'alsologtostderr', 'log_dir')

if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))  # `experiments` is not an installed package


# --- extracting commands and code spans from Markdown ------------------------------------------------------------


def code_lines(text: str) -> list[tuple[int, str]]:
  """Lines of fenced and 4-space-indented code blocks, `\\`-continuations joined: (line number, text)."""
  lines, fenced, pending, start = [], False, '', 0
  for number, line in enumerate(text.splitlines(), 1):
    if line.lstrip().startswith('```'):
      fenced = not fenced
      continue
    if not (fenced or line.startswith('    ')):
      continue
    if not pending:
      start = number
    if line.rstrip().endswith('\\'):
      pending += line.strip()[:-1] + ' '
      continue
    lines.append((start, pending + line.strip()))
    pending = ''
  return lines


def inline_spans(text: str) -> list[tuple[int, str]]:
  """Inline code spans outside code blocks: (line number, text)."""
  spans, fenced = [], False
  for number, line in enumerate(text.splitlines(), 1):
    if line.lstrip().startswith('```'):
      fenced = not fenced
    if fenced or line.startswith('    '):
      continue
    spans += [(number, span) for span in re.findall(r'`([^`]+)`', line)]
  return spans


def split_words(command: str) -> list[str]:
  return shlex.split(command, comments=True)


def shell_commands(command: str) -> list[list[str]]:
  """A shell line as its simple commands (split at `&&`), the `--command` of `gcloud ... ssh` included."""
  words = split_words(command)
  if not words:
    return []
  commands, current = [], []
  for word in words:
    if word == '&&':
      commands.append(current)
      current = []
    else:
      current.append(word)
  commands.append(current)
  for words_ in list(commands):
    if words_ and words_[0] == 'gcloud':
      commands += [inner for word in words_ if word.startswith('--command=')
                   for inner in shell_commands(word.split('=', 1)[1])]
  return [c for c in commands if c]


def doc_commands(path: pathlib.Path) -> list[tuple[str, list[str]]]:
  """Every command written in a doc as (where, words); inline spans count when they start with a program."""
  text = path.read_text()
  found = []
  for number, line in code_lines(text):
    if line.split(' ', 1)[0] not in PROGRAMS:
      continue  # a file listing, a diagram, Python
    try:
      commands = shell_commands(line)
    except ValueError as error:
      found.append((f'{path.name}:{number}', ['<unparseable>', str(error)]))
      continue
    found += [(f'{path.name}:{number}', words) for words in commands]
  for number, span in inline_spans(text):
    if '<' in span or ' ' not in span or span.split(' ', 1)[0] not in (*DIFFVOX, *PYTHONS, 'make'):
      continue  # a placeholder, or a program named in prose
    with contextlib.suppress(ValueError):  # prose such as `--config.x='(...)'` fragments are not commands
      found += [(f'{path.name}:{number}', words) for words in shell_commands(span)]
  return found


ALL_COMMANDS = [(doc.name, where, words) for doc in DOCS for where, words in doc_commands(doc)]


def commands_of(program_test) -> list:
  return [pytest.param(words, id=where) for _, where, words in ALL_COMMANDS if program_test(words)]


# --- parsing flags the way the programs do -----------------------------------------------------------------------


@contextlib.contextmanager
def defined_flags(module):
  """Defines `module.define_flags()` on the global absl registry and removes those flags afterwards."""
  registry = flags.FLAGS
  before = set(registry)
  module.define_flags()
  cli.define_global_flags()
  try:
    yield registry
  finally:
    registry.unparse_flags()
    for name in set(registry) - before:
      delattr(registry, name)


def parse_absl(module, program: str, args: list[str]) -> tuple[list[str], dict]:
  """Parses `args` against the module's flags as `app.run` would; returns positional arguments and flag values."""
  resolved = cli.resolve_config_argument(args)
  argv = [program, *resolved]
  saved_argv = sys.argv
  sys.argv = argv  # ml-collections finds the `--config.a.b` override names in sys.argv
  try:
    with defined_flags(module) as registry:
      positional = registry(argv)[1:]
      values = {name: registry[name].value for name in registry if name not in ABSL_BUILTIN}
      if isinstance(values.get('config'), ml_collections.ConfigDict):
        config_lib.validate(values['config'])
      return positional, values
  finally:
    sys.argv = saved_argv


@functools.cache
def base_config():
  return config_lib.load_config('base')


def check_field_overrides(overrides: list[str]) -> None:
  """`a.b=value` strings name real fields (values are checked by the programs themselves)."""
  for override in overrides:
    config_lib.apply_overrides(base_config().copy_and_resolve_references(), [override])


def check_sweep_sets(sets: list[str]) -> None:
  for item in sets:
    name, sep, values = item.partition('=')
    assert sep and values, f'--set {item!r} is not field=v1,v2,...'
    check_field_overrides([f'{name}={values.split(",")[0]}'])


def is_diffvox(words: list[str]) -> bool:
  return words[0] in DIFFVOX


def is_python_module(words: list[str]) -> bool:
  return words[0] in PYTHONS and len(words) > 2 and words[1] == '-m'


def is_python_script(words: list[str]) -> bool:
  return words[0] in PYTHONS and len(words) > 1 and words[1].endswith('.py')


def is_make(words: list[str]) -> bool:
  return words[0] == 'make'


# --- the tests ----------------------------------------------------------------------------------------------------


def test_the_docs_contain_commands_of_every_kind():
  kinds = {kind.__name__: sum(kind(words) for _, _, words in ALL_COMMANDS)
           for kind in (is_diffvox, is_python_module, is_python_script, is_make)}
  assert all(kinds.values()), kinds
  assert {'README.md', 'architecture.md', 'data.md', 'paper.md'} <= {doc.name for doc in DOCS}
  unparseable = [where for _, where, words in ALL_COMMANDS if words[0] == '<unparseable>']
  assert not unparseable, f'command lines that the shell cannot split: {unparseable}'


@pytest.mark.parametrize('words', commands_of(is_diffvox))
def test_diffvox_command_lines_parse(words):
  assert len(words) > 1 and words[1] in cli.COMMANDS, f'unknown command in {shlex.join(words)}'
  if len(words) == 2 or cli.wants_help(words[2:]):
    return  # a command named in prose, or its help
  module = importlib.import_module(cli.COMMANDS[words[1]][0])
  positional, values = parse_absl(module, f'diffvox {words[1]}', words[2:])
  if words[1] not in POSITIONAL_COMMANDS:
    assert not positional, f'{words[1]} takes no arguments, got {positional}'
  elif not values.get('refine'):
    assert positional, 'separate needs at least one INPUT'


@pytest.mark.parametrize('words', commands_of(is_python_module))
def test_python_module_lines_parse(words):
  name = words[2]
  path = REPO / (name.replace('.', '/') + '.py')
  assert path.is_file(), f'{name}: no module {path.relative_to(REPO)}'
  module = importlib.import_module(name)
  if hasattr(module, 'define_flags'):
    positional, values = parse_absl(module, name, words[3:])
    assert not positional, f'{name} takes no arguments, got {positional}'
    if values.get('config'):
      config_lib.resolve_config_path(values['config'])
    check_field_overrides(values.get('override') or [])
    check_sweep_sets(values.get('set') or [])
    if values.get('sweep'):
      assert (REPO / values['sweep']).is_file(), values['sweep']
    for model in values.get('model') or []:
      assert '=' in model, f'--model {model!r} is not LABEL=CHECKPOINT'
  else:
    assert len(words) == 3, f'{name} defines no flags, yet the docs pass some'


def argparse_options(path: pathlib.Path) -> set[str]:
  """The `--option` names of a script's `parser.add_argument(...)` calls."""
  options = {'--help', '-h'}
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Call) and getattr(node.func, 'attr', None) == 'add_argument':
      options |= {arg.value for arg in node.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)}
  return options


@pytest.mark.parametrize('words', commands_of(is_python_script))
def test_python_script_lines_use_defined_options(words):
  path = REPO / words[1]
  assert path.is_file(), f'no script {words[1]}'
  options = argparse_options(path)
  overrides = []
  for previous, word in zip(words[1:], words[2:], strict=False):
    if word.startswith('-'):
      assert word.split('=', 1)[0] in options, f'{words[1]} has no option {word} (it has {sorted(options)})'
    elif previous == '--override':
      overrides.append(word)
    elif previous == '--config':
      config_lib.resolve_config_path(word)
  check_field_overrides(overrides)


def makefile_targets() -> set[str]:
  return set(re.findall(r'^([A-Za-z0-9_.-]+)\s*:(?!=)', (REPO / 'Makefile').read_text(), re.MULTILINE))


@pytest.mark.parametrize('words', commands_of(is_make))
def test_make_targets_exist(words):
  targets = [word for word in words[1:] if '=' not in word and not word.startswith('-')]
  assert targets, f'no target in {shlex.join(words)}'
  missing = set(targets) - makefile_targets()
  assert not missing, f'the Makefile has no target {missing}'


def test_make_test_and_demo_are_the_readme_set_up():
  readme = (REPO / 'README.md').read_text()
  assert 'make demo' in readme and 'make test' in readme
  assert readme.index('make demo') < readme.index('## Separate a song'), 'keep the set-up commands near the top'


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: p.name)
def test_config_overrides_in_prose_name_real_fields(doc):
  for number, span in inline_spans(doc.read_text()):
    if '<' in span:
      continue  # the general form, `--config.<section>.<field>=<value>`
    for override in re.findall(r'--config\.([\w.]+=\S.*)', span):
      value = override.split('=', 1)
      override = f'{value[0]}={value[1].strip(chr(39) + chr(34))}'
      try:
        config_lib.load_config('base', [override])
      except config_lib.ConfigError as error:
        pytest.fail(f'{doc.name}:{number}: --config.{override}: {error}')


def test_accelerator_installs_pin_the_packaged_jax_version():
  pinned = re.search(r'^\s*jax==(\S+)$', (REPO / 'setup.cfg').read_text(), re.MULTILINE).group(1)
  for doc in DOCS:
    for version in re.findall(r'jax\[\w+\]==([\w.]+)', doc.read_text()):
      assert version == pinned, f'{doc.name}: jax {version} in an install line, setup.cfg pins {pinned}'


def repo_path_candidates(token: str) -> list[pathlib.Path] | None:
  """Where a path written in the docs should be, or None when it is not a path of the repository."""
  token = token.rstrip('/').rstrip('.,')
  if not token or '<' in token or '*' in token or ' ' in token or token.startswith(('-', 'http')):
    return None
  first = token.split('/', 1)[0]
  if token in REPO_FILES or first in REPO_DIRS:
    return [REPO / token]
  if first in PACKAGE_DIRS and '/' in token:
    return [REPO / 'diffvox_jax' / token]
  return None


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: p.name)
def test_paths_in_backticks_and_links_exist(doc):
  text = doc.read_text()
  missing = []
  for number, span in inline_spans(text) + code_lines(text):
    for token in re.split(r'[\s,()=]+', span):
      candidates = repo_path_candidates(token)
      if candidates and not any(path.exists() for path in candidates):
        missing.append(f'{doc.name}:{number}: {token}')
  for number, line in enumerate(text.splitlines(), 1):
    for target in re.findall(r'\]\(([^)\s]+)\)', line):
      if target.startswith(('http://', 'https://', '#', 'mailto:')):
        continue
      if not (doc.parent / target.split('#', 1)[0]).exists():
        missing.append(f'{doc.name}:{number}: link {target}')
  assert not missing, 'paths that do not exist:\n' + '\n'.join(missing)


def defined_names(path: pathlib.Path) -> set[str]:
  """Top-level functions, classes and assignments of a module, and `Class.method` for class members."""
  names = set()
  for node in ast.parse(path.read_text()).body:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
      names.add(node.name)
      if isinstance(node, ast.ClassDef):
        names |= {f'{node.name}.{item.name}' for item in node.body
                  if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))}
    elif isinstance(node, ast.Assign):
      names |= {target.id for target in node.targets if isinstance(target, ast.Name)}
    elif isinstance(node, ast.ImportFrom):  # re-exports such as models.build_model
      names |= {alias.asname or alias.name for alias in node.names}
  return names


def resolve_dotted(name: str) -> str | None:
  """None when `a.b.c.func` names a module of the repository and something defined in it, else the problem."""
  parts = name.split('.')
  for split in range(len(parts), 0, -1):
    module = REPO.joinpath(*parts[:split])
    for path in (module.with_suffix('.py'), module / '__init__.py'):
      if path.is_file():
        rest = '.'.join(parts[split:])
        if not rest or rest in defined_names(path):
          return None
        return f'{path.relative_to(REPO)} defines no {rest}'
  return 'no such module'


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: p.name)
def test_dotted_names_exist(doc):
  problems = []
  for number, span in inline_spans(doc.read_text()):
    for name in re.findall(r'\b((?:diffvox_jax|experiments|configs)(?:\.\w+)+)', span):
      if name.endswith(('.py', '.md', '.json')):
        continue
      problem = resolve_dotted(name)
      if problem:
        problems.append(f'{doc.name}:{number}: {name}: {problem}')
  assert not problems, '\n'.join(problems)
