"""`diffvox prepare`: build a tfds dataset (array_record, no TensorFlow) from a local folder or synthetic songs.

    diffvox prepare --dataset musdb18hq --manual-dir ~/data/musdb18hq --data-dir ~/tensorflow_datasets
    diffvox prepare --dataset mir1k --manual-dir ../shared/data/mir1k --data-dir data_cache --config cpu_tiny
    diffvox prepare --dataset synthetic --num-songs 24 --config configs/cpu_tiny.py --data-dir data_cache

The audio is stored at `--sample-rate`/`--channels` (default: the config's `data.sample_rate`/`data.channels`;
the base config when there is no `--config`) under `DATA_DIR/<dataset>/<rate>hz_<channels>ch/`. Running it again
reuses the built dataset. Datasets and folder layouts: `diffvox_jax/data/layouts.py`.
"""

import pathlib

import tensorflow_datasets as tfds
from absl import flags

from diffvox_jax import audio
from diffvox_jax import config as config_lib
from diffvox_jax.commands import common
from diffvox_jax.data import builders, layouts
from diffvox_jax.data.synthetic import MissingToolError

FLAGS = flags.FLAGS


def define_flags() -> None:
  common.define_config_flag()
  flags.DEFINE_enum('dataset', None, list(builders.BUILDERS), 'dataset to build.')
  flags.DEFINE_string('manual-dir', None, 'the local dataset folder (every dataset but synthetic).')
  flags.DEFINE_string('data-dir', None, 'tfds data folder to write (default: the config\'s data.data_dir).')
  flags.DEFINE_integer('num-songs', None, 'synthetic: songs to render (seeds 0..N-1).')
  flags.DEFINE_float('max-seconds', None, 'synthetic: cap on each song\'s length.')
  flags.DEFINE_string('vocals-stem', None, 'stems_folder: the vocal stem\'s file name without suffix (vocals).')
  flags.DEFINE_integer('sample-rate', None, 'stored sample rate (default: the config\'s data.sample_rate).')
  flags.DEFINE_integer('channels', None, 'stored channels, 1 or 2 (default: the config\'s data.channels).')


def _flag(name: str):
  return FLAGS[name].value


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    common.fail(f'unexpected arguments: {" ".join(argv[1:])}')
  name = FLAGS.dataset
  if name is None:
    common.fail(f'--dataset is required (one of {", ".join(builders.BUILDERS)})')
  config = common.validated_config() if FLAGS.config is not None else config_lib.load_config('base')
  manual_dir = _flag('manual-dir')
  if name in builders.NEEDS_MANUAL_DIR and not manual_dir:
    common.fail(f'{name} needs --manual-dir (the local dataset folder)')
  if name not in builders.NEEDS_MANUAL_DIR and manual_dir:
    common.fail(f'{name} takes no --manual-dir')
  data_dir = pathlib.Path(_flag('data-dir') or config.data.data_dir).expanduser()
  sample_rate = _flag('sample-rate') or config.data.sample_rate
  channels = _flag('channels') or config.data.channels
  try:
    options = builders.canonical_options(name, num_songs=_flag('num-songs'), max_seconds=_flag('max-seconds'),
                                         vocals_stem=_flag('vocals-stem'))
    builder = builders.make_builder(name, data_dir, sample_rate, channels, options)
    tfds.disable_progress_bar()  # one bar per split, over tracks (builders.py)
    built = builders.prepare(builder, manual_dir)
  except (builders.DatasetError, layouts.LayoutError, audio.AudioError, MissingToolError) as error:
    common.fail(str(error))
  metadata = builders.stored_metadata(builder.data_path)
  print(f'{"built" if built else "already prepared (reused)"}: {builder.data_path}')
  for split, entries in metadata['splits'].items():
    minutes = sum(e['length'] for e in entries) / metadata['sample_rate'] / 60
    print(f'  {split:<12} {len(entries):>6} tracks  {minutes:9.1f} min')
