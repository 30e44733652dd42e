"""Input pipeline throughput against the train step's appetite: augmented crops per second.

Builds a temporary `stems_folder` dataset of random-noise songs (vocals, drums, bass, other; the vocals silent in
one second out of four, so silence dropping works), then times `pipeline.train_iterator` with the config's
augmentations at the paper's shape (3 s crops of 44.1 kHz stereo, batch 32) with pitch shift off and with pitch
shift on every crop, and at the cpu_tiny shape. Next to it: how many crops per second the cpu_tiny train step
consumes: a few steps of the trainer's jitted `train.parallel.make_parallel_train_step`, after compilation.

    .venv/bin/python tools/bench_pipeline.py [--songs 6] [--seconds 20] [--batches 6] [--out bench_pipeline.json]

Prints a table and writes JSON; the last line is `crops_per_s=X crops_per_s_pitch=X train_consumption_per_s=X`.
"""

import argparse
import json
import os
import pathlib
import platform
import tempfile
import time

import numpy as np
import soundfile as sf
import tensorflow_datasets as tfds

from diffvox_jax.config import load_config
from diffvox_jax.data import builders, pipeline

STEMS = ('vocals', 'drums', 'bass', 'other')
TRAIN_STEPS = 2


def write_noise_songs(root: pathlib.Path, songs: int, seconds: float, rate: int) -> None:
  """`root/<song>/<stem>.wav` of white noise at -20 dBFS; vocals silent in every 4th second."""
  rng = np.random.default_rng(0)
  length = int(seconds * rate)
  for song in range(songs):
    folder = root / f'noise song {song:02d}'
    folder.mkdir(parents=True)
    for stem in STEMS:
      samples = rng.normal(0.0, 0.1, (length, 2)).astype(np.float32)
      if stem == 'vocals':
        for start in range(0, length, 4 * rate):
          samples[start:start + rate] = 0.0
      sf.write(folder / f'{stem}.wav', samples, rate, subtype='PCM_16')


def pipeline_rate(config, batches: int) -> float:
  """Crops per second of `train_iterator` after one warm-up batch."""
  iterator = pipeline.train_iterator(config)
  next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * config.train.batch_size / (time.perf_counter() - start)


def train_consumption_rate() -> tuple[float, float]:
  """(crops per second, seconds per step) of the cpu_tiny training step as the trainer runs it, after compiling.

  The trainer's own path: `parallel.make_parallel_train_step` (jit + shard_map over every local device, state
  donated) fed by `parallel.stack_and_shard`, one optimizer step per dispatch.
  """
  import jax

  from diffvox_jax.models import build_model
  from diffvox_jax.train import parallel

  config = load_config('cpu_tiny')
  model = build_model(config)
  mesh = parallel.make_mesh()
  state = parallel.create_sharded_state(model, config, jax.random.key(0), mesh)
  step = parallel.make_parallel_train_step(model, config, mesh)
  shape = (config.train.batch_size, config.data.segment, config.data.channels)
  vocals = np.random.default_rng(0).normal(0, 0.1, shape).astype(np.float32)
  batch = {'vocals': vocals, 'mixture': 2 * vocals}
  rng = jax.random.key(1)
  state, metrics = step(state, parallel.stack_and_shard([batch], mesh), rng)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(TRAIN_STEPS):
    state, metrics = step(state, parallel.stack_and_shard([batch], mesh), rng)
  jax.block_until_ready(metrics)
  seconds = (time.perf_counter() - start) / TRAIN_STEPS
  return config.train.batch_size / seconds, seconds


def data_config(name: str, data_dir: pathlib.Path, rate: int, **overrides):
  fields = {'data.data_dir': f"'{data_dir}'", 'data.sources': "'stems_folder:1.0'", 'data.sample_rate': rate,
            **overrides}
  return load_config(name, [f'{key}={value}' for key, value in fields.items()])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--songs', type=int, default=6)
  parser.add_argument('--seconds', type=float, default=20.0)
  parser.add_argument('--batches', type=int, default=6, help='timed batches per setting')
  parser.add_argument('--out', default='bench_pipeline.json')
  args = parser.parse_args()
  tfds.disable_progress_bar()
  load_at_start = os.getloadavg()
  rows = []
  with tempfile.TemporaryDirectory(prefix='bench_pipeline_') as tmp:
    songs, data_dir = pathlib.Path(tmp) / 'songs', pathlib.Path(tmp) / 'tfds'
    write_noise_songs(songs, args.songs, args.seconds, 44100)
    start = time.perf_counter()
    for rate in (44100, 22050):
      builders.prepare(builders.make_builder('stems_folder', data_dir, rate, 2), songs)
    build_s = time.perf_counter() - start
    settings = [
        ('base (3 s, 44.1 kHz, batch 32)', 'no pitch shift', 'base', 44100, {'data.augment.pitch_prob': 0.0}),
        ('base (3 s, 44.1 kHz, batch 32)', 'pitch shift on every crop', 'base', 44100,
         {'data.augment.pitch_prob': 1.0}),
        ('base (3 s, 44.1 kHz, batch 32)', 'config augmentations (pitch 0.3)', 'base', 44100, {}),
        ('cpu_tiny (0.74 s, 22.05 kHz, batch 8)', 'no pitch shift', 'cpu_tiny', 22050,
         {'data.augment.pitch_prob': 0.0}),
        ('cpu_tiny (0.74 s, 22.05 kHz, batch 8)', 'config augmentations (pitch 0.3)', 'cpu_tiny', 22050, {}),
    ]
    for shape, augmentation, name, rate, overrides in settings:
      config = data_config(name, data_dir, rate, **overrides)
      rows.append({'shape': shape, 'augmentation': augmentation, 'read_threads': config.data.read_threads,
                   'crops_per_s': pipeline_rate(config, args.batches)})
      print(f'measured: {shape}, {augmentation}: {rows[-1]["crops_per_s"]:.1f} crops/s', flush=True)
  consumption, step_s = train_consumption_rate()
  crops, crops_pitch = rows[0]['crops_per_s'], rows[1]['crops_per_s']
  print(f'\n{"shape":<40} {"augmentation":<36} {"crops/s":>9}')
  for row in rows:
    print(f'{row["shape"]:<40} {row["augmentation"]:<36} {row["crops_per_s"]:>9.1f}')
  print(f'{"cpu_tiny train step (batch 8)":<40} {f"{step_s:.2f} s/step consumes":<36} {consumption:>9.1f}')
  print(f'pipeline / consumption: {crops / consumption:.1f}x (no pitch), {crops_pitch / consumption:.1f}x (pitch)')
  result = {
      'rows': rows, 'crops_per_s': crops, 'crops_per_s_pitch': crops_pitch,
      'train_consumption_per_s': consumption, 'train_step_s': step_s,
      'train_consumption_method': f'{TRAIN_STEPS} cpu_tiny steps of train.parallel.make_parallel_train_step after '
                                  'compilation',
      'dataset': f'{args.songs} noise songs x {args.seconds} s, stems_folder, built at 44.1 and 22.05 kHz '
                 f'in {build_s:.1f} s',
      'machine': f'{platform.machine()}, {os.cpu_count()} cores', 'load_average_at_start': load_at_start,
      'load_average_at_end': os.getloadavg(),
  }
  out = pathlib.Path(args.out)
  temp = out.with_name(f'.{out.name}.tmp')
  temp.write_text(json.dumps(result, indent=2))
  os.replace(temp, out)
  print(f'crops_per_s={crops:.1f} crops_per_s_pitch={crops_pitch:.1f} train_consumption_per_s={consumption:.1f}')


if __name__ == '__main__':
  main()
