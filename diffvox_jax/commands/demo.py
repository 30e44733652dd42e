"""`diffvox demo`: the whole job on synthetic songs: prepare, train, separate the held-out songs, score, report.

    diffvox demo                                   # what `make demo` runs: demo_out/report.md at the end
    diffvox demo --out quick --num-songs 6 --max-seconds 8 --config.train.num_steps=20

Renders `--num-songs` synthetic songs, trains the `demo` config (or `--config`, with the usual `--config.a.b=value`
overrides) on them, separates the held-out tenth, scores the vocals against the mixture and the oracle mask, and
writes figures and `OUT/report.md` with the `diffvox` command behind every stage. Running it again reuses the
dataset, the run and the separated files where they are still valid (`diffvox_jax/demo.py` says when).
"""

import pathlib

from absl import flags
from ml_collections import config_flags

from diffvox_jax import config as config_lib
from diffvox_jax import demo
from diffvox_jax.commands import common
from diffvox_jax.train import loop

FLAGS = flags.FLAGS
DEFAULT_CONFIG = demo.DEMO_CONFIG  # `--config` when none is given (cli.with_default_config)


def define_flags() -> None:
  common.define_config_flag()
  flags.DEFINE_string('out', 'demo_out', 'output folder (dataset, run, separated audio, figures, report).')
  flags.DEFINE_integer('num-songs', demo.NUM_SONGS, 'synthetic songs to render (the last tenth are held out).',
                       lower_bound=3)
  flags.DEFINE_float('max-seconds', None, "cap on each song's length in seconds (default: the full 20-35 s songs).",
                     lower_bound=1.0)
  flags.DEFINE_integer('seed', 0, 'separation seed.')


def config_name_and_overrides() -> tuple[str, list[str]]:
  """`--config` as a bare name where it is one of the project's configs (else its path), and the `--config.`
  overrides as `section.field=value` strings, in the form the report's commands repeat them."""
  path = pathlib.Path(config_flags.get_config_filename(FLAGS['config']))
  name = path.stem if path.parent.resolve() == config_lib.CONFIG_DIR.resolve() else str(path)
  overrides = [f'{field}={value}' for field, value in config_flags.get_override_values(FLAGS['config']).items()]
  return name, overrides


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    common.fail(f'unexpected arguments: {" ".join(argv[1:])}')
  common.validated_config()  # a bad override fails here, in one line, before anything is rendered.
  demo.request_host_devices()
  config_name, overrides = config_name_and_overrides()
  try:
    demo.run_demo(FLAGS.out, config_name=config_name, overrides=overrides, num_songs=FLAGS['num-songs'].value,
                  max_seconds=FLAGS['max-seconds'].value, seed=FLAGS.seed)
  except (ValueError, OSError, loop.TrainingDiverged) as error:
    common.fail(str(error), code=1)
  except loop.TrainingInterrupted as error:  # SIGTERM or SIGHUP while training: the run is checkpointed.
    common.fail(str(error), code=128 + error.signum)
