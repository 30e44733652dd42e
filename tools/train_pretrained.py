"""Reproduces the pretrained model shipped in `diffvox_jax/pretrained/`: data, training, export and evaluation.

    python tools/train_pretrained.py --workdir runs/pretrained --data-dir data_cache/pretrained

1. renders `--num-songs` synthetic songs (redistributable: Bach chorales from music21, Festival, FluidSynth):
       diffvox prepare --dataset synthetic --num-songs N --config demo <overrides> --data-dir DATA_DIR
2. trains the `demo` config with `PRETRAINED_OVERRIDES` (more steps than `make demo`), resuming if interrupted:
       diffvox train --config demo --workdir WORKDIR --config.data.data_dir=DATA_DIR <overrides>
3. exports the EMA weights (`export_for_inference`) to `diffvox_jax/pretrained/<NAME>/` (config.json +
   params.msgpack), the model `diffvox separate` uses when no `--checkpoint` is given;
4. evaluates the exported model next to the mixture (lower bound) and the oracle IRM, without museval:
   the held-out synthetic test songs (`diffvox evaluate --dataset synthetic --split test ...`) and
   `--mir1k-clips` clips of MIR-1K dev (real singing, `../shared/data/mir1k/dev`, scored at its own 16 kHz mono:
   the model's input is resampled and converted, its output converted back). Summaries go to
   `WORKDIR/evaluation/{synthetic,mir1k}/summary.{json,md}`; the training facts to `WORKDIR/pretrained.json`.

Every stage reuses what an earlier invocation built (prepared data, checkpoints, stored per-track results).
The MODEL_CARD.md beside the export is written by hand from `pretrained.json` and the two summaries.
"""

import argparse
import json
import os
import pathlib
import platform
import time

import ml_collections

from diffvox_jax import config as config_lib
from diffvox_jax import demo, evaluate
from diffvox_jax.data import layouts, pipeline
from diffvox_jax.train import checkpoint as checkpoint_lib

NAME = 'diffdmx_demo_8k'
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
EXPORT_DIR = REPO_ROOT / 'diffvox_jax' / 'pretrained' / NAME
MIR1K_DEV = REPO_ROOT.parent / 'shared' / 'data' / 'mir1k' / 'dev'
MIR1K_RATE = 16000
# What differs from `configs/demo.py`: a longer run (the demo's architecture, data rate and sampler).
PRETRAINED_OVERRIDES = ('train.num_steps=1500', 'train.checkpoint_every=250', 'train.eval_every=250',
                        'train.ema_decay=0.99')


def mir1k_tracks(root: pathlib.Path, count: int) -> list[pipeline.Track]:
  """`count` MIR-1K clips spread evenly over the folder's (sorted) clips, at 16 kHz mono."""
  sources = layouts.mir1k_tracks(root.parent)
  sources = [s for s in sources if s.metadata['folder'].startswith(f'{root.name}/')]
  if not sources:
    raise FileNotFoundError(f'{root}: no MIR-1K clips')
  step = max(1, len(sources) // count)
  tracks = []
  for source in sources[::step][:count]:
    clip = source.load(MIR1K_RATE, 1)
    tracks.append(pipeline.Track(source.name, clip.vocals + clip.accompaniment, clip.vocals, MIR1K_RATE))
  return tracks


def record_training_time(workdir: pathlib.Path, seconds: float, steps: int) -> dict:
  """Adds this invocation's training wall time to `WORKDIR/pretrained.json` and returns its content."""
  path = workdir / 'pretrained.json'
  facts = json.loads(path.read_text()) if path.is_file() else {'sessions': []}
  if seconds > 0:
    facts['sessions'].append({'train_wall_s': round(seconds, 1), 'step_after': steps, 'machine': platform.node(),
                              'cpu_count': os.cpu_count(), 'load_avg_1min_at_end': os.getloadavg()[0]})
  facts['train_wall_s_total'] = round(sum(s['train_wall_s'] for s in facts['sessions']), 1)
  facts['name'] = NAME
  checkpoint_lib.write_atomically(path, (json.dumps(facts, indent=2) + '\n').encode())
  return facts


def evaluate_export(config: ml_collections.ConfigDict, params, tracks: list[pipeline.Track], out_dir: pathlib.Path,
                    dataset: str, split: str) -> dict:
  """The exported model and both baselines on `tracks` (one run, uSDR only); prints the summary table."""
  summary = evaluate.evaluate_model(config, params, tracks, out_dir, dataset=dataset, split=split, runs=1,
                                    museval=False, label=NAME, checkpoint=str(EXPORT_DIR), total=len(tracks))
  print((out_dir / 'summary.md').read_text())
  return summary


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--workdir', type=pathlib.Path, default=pathlib.Path('runs/pretrained'))
  parser.add_argument('--data-dir', type=pathlib.Path, default=pathlib.Path('data_cache/pretrained'))
  parser.add_argument('--num-songs', type=int, default=96, help='synthetic songs (the last tenth are held out).')
  parser.add_argument('--mir1k-clips', type=int, default=78, help='MIR-1K dev clips to evaluate on (78: all).')
  args = parser.parse_args()
  demo.request_host_devices()

  overrides = list(PRETRAINED_OVERRIDES)
  config = config_lib.load_config(demo.DEMO_CONFIG, overrides)
  config.data.data_dir = str(args.data_dir)
  config = config_lib.validate(config)
  print('$', demo.prepare_command(demo.DEMO_CONFIG, overrides, args.data_dir, args.num_songs, None))
  demo.prepare_data(config, args.data_dir, args.num_songs, None)

  print('$', demo.train_command(demo.DEMO_CONFIG, overrides, args.data_dir, args.workdir))
  start = time.perf_counter()
  demo.train_model(config, args.workdir)
  facts = record_training_time(args.workdir, time.perf_counter() - start, checkpoint_lib.latest_step(args.workdir))
  step = checkpoint_lib.export_for_inference(args.workdir, EXPORT_DIR)
  shipped = checkpoint_lib.read_config(EXPORT_DIR)
  shipped.data.data_dir = config_lib.load_config(demo.DEMO_CONFIG).data.data_dir  # not this machine's folder
  checkpoint_lib.save_config(EXPORT_DIR, shipped)
  print(f'exported step {step} to {EXPORT_DIR} '
        f'({(EXPORT_DIR / checkpoint_lib.PARAMS_FILE).stat().st_size / 2**20:.1f} MiB); '
        f'training wall time so far {facts["train_wall_s_total"] / 60:.1f} min')

  export_config, params = checkpoint_lib.load_for_inference(EXPORT_DIR)
  synthetic = list(pipeline.tracks(config, demo.DATASET, demo.TEST_SPLIT))
  evaluate_export(export_config, params, synthetic, args.workdir / 'evaluation' / 'synthetic', demo.DATASET,
                  demo.TEST_SPLIT)
  evaluate_export(export_config, params, mir1k_tracks(MIR1K_DEV, args.mir1k_clips),
                  args.workdir / 'evaluation' / 'mir1k', 'mir1k', 'dev')


if __name__ == '__main__':
  main()
