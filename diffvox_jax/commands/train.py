"""`diffvox train`: train (or resume) a model, data-parallel over every device of every host.

    diffvox train --config configs/cpu_tiny.py --workdir runs/tiny --config.data.data_dir=data_cache
    diffvox train --workdir runs/tiny          # resume with the run's saved config.json

Progress bar with steps/s, examples/s and loss; TensorBoard scalars in `WORKDIR/tensorboard`; checkpoints in
`WORKDIR/checkpoints` every `train.checkpoint_every` steps and on SIGTERM/SIGINT/SIGHUP (exit status 128 + signal).
A non-finite loss stops the run (exit status 1) and keeps the last good checkpoint. Multi-host: set
`--config.train.distributed=True` and start the same command on every host.
"""

import os

import jax
import ml_collections
from absl import flags

from diffvox_jax import config as config_lib
from diffvox_jax import files, inference
from diffvox_jax.commands import common
from diffvox_jax.data.builders import DatasetError
from diffvox_jax.train import loop, parallel

FLAGS = flags.FLAGS


def define_flags() -> None:
  common.define_config_flag()
  flags.DEFINE_string('workdir', None, 'run folder (config.json, checkpoints/, tensorboard/); resumed if it holds '
                      'a checkpoint.')


def compilation_cache_dir(config: ml_collections.ConfigDict, workdir: str) -> str | None:
  """Where `train.compilation_cache` puts the persistent XLA cache (None: JAX's own setting stands)."""
  if os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return None
  setting = config.train.get('compilation_cache', '')
  if setting == 'workdir':
    return os.fspath(files.as_path(workdir) / 'xla_cache')
  return setting or None


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    common.fail(f'unexpected arguments: {" ".join(argv[1:])}')
  if not FLAGS.workdir:
    common.fail('--workdir is required')
  saved_config = files.as_path(FLAGS.workdir) / inference.CONFIG_FILE
  if FLAGS.config is None and saved_config.is_file():
    config = inference.read_config(saved_config.parent)
  else:
    config = common.validated_config()
  parallel.initialize_distributed(config)
  cache = compilation_cache_dir(config, FLAGS.workdir)
  if cache:
    jax.config.update('jax_compilation_cache_dir', cache)
  try:
    loop.train_and_evaluate(config, FLAGS.workdir)
  except (FileNotFoundError, config_lib.ConfigError, inference.CheckpointError, DatasetError,
          parallel.StartupFailed) as error:
    common.fail(str(error))
  except loop.TrainingDiverged as error:
    common.fail(str(error), code=1)
  except loop.TrainingInterrupted as error:
    common.fail(str(error), code=128 + error.signum)
