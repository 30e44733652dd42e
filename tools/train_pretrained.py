"""Reproduces the pretrained models shipped in `diffvox_jax/pretrained/`: data, training, export and evaluation.

    python tools/train_pretrained.py --recipe mir1k --workdir runs/mir1k --data-dir data_cache/mir1k   # the default
    python tools/train_pretrained.py --recipe demo --workdir runs/pretrained --data-dir data_cache/pretrained

Recipe `mir1k` (the default model `diffdmx_spectral_16k` and the baseline `mask_baseline_16k`):

1. prepares the MIR-1K training and dev singers (`--mir1k`, default `../shared/data/mir1k`) and 200 synthetic
   songs (for the baseline's data mix) at 16 kHz mono:
       diffvox prepare --dataset mir1k --manual-dir MIR1K --config mir1k_mask --data-dir DATA_DIR
       diffvox prepare --dataset synthetic --num-songs 200 --config mir1k_mask --data-dir DATA_DIR
2. trains `mir1k_spectral` and the same-budget baseline `mir1k_mask` at the same time, each pinned to one CPU core
   (`taskset`, single-threaded XLA), each resuming if interrupted:
       diffvox train --config mir1k_spectral --workdir WORKDIR/spectral --config.data.data_dir=DATA_DIR
       diffvox train --config mir1k_mask --workdir WORKDIR/mask --config.data.data_dir=DATA_DIR
3. exports both (EMA weights) into `diffvox_jax/pretrained/` and writes the training facts to
   `WORKDIR/pretrained.json`;
4. runs `tools/bench_quality.py` on the exports (`WORKDIR/bench_quality.json`).

Recipe `demo` (the earlier default `diffdmx_demo_8k`, synthetic songs only):

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
import shlex
import shutil
import subprocess
import sys
import time

import ml_collections

from diffvox_jax import config as config_lib
from diffvox_jax import demo, evaluate, files, inference
from diffvox_jax.data import layouts, pipeline
from diffvox_jax.train import checkpoint as checkpoint_lib

NAME = 'diffdmx_demo_8k'
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
PRETRAINED = REPO_ROOT / 'diffvox_jax' / 'pretrained'
EXPORT_DIR = PRETRAINED / NAME
MIR1K = REPO_ROOT.parent / 'shared' / 'data' / 'mir1k'
MIR1K_DEV = MIR1K / 'dev'
# Recipe mir1k: (config, workdir name, export name); trained side by side, one core each.
MIR1K_MODELS = (('mir1k_spectral', 'spectral', 'diffdmx_spectral_16k'), ('mir1k_mask', 'mask', 'mask_baseline_16k'))
MIR1K_RATE = 16000
MIR1K_SYNTHETIC_SONGS = 200  # mixed into the baseline's training data (`configs/mir1k_mask.py`'s data.sources)
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


def record_training_time(workdir: pathlib.Path, seconds: float, steps: int, name: str = NAME) -> dict:
  """Adds this invocation's training wall time to `WORKDIR/pretrained.json` and returns its content."""
  path = workdir / 'pretrained.json'
  facts = json.loads(path.read_text()) if path.is_file() else {'sessions': []}
  if seconds > 0:
    facts['sessions'].append({'train_wall_s': round(seconds, 1), 'step_after': steps, 'machine': platform.node(),
                              'cpu_count': os.cpu_count(), 'load_avg_1min_at_end': os.getloadavg()[0]})
  facts['train_wall_s_total'] = round(sum(s['train_wall_s'] for s in facts['sessions']), 1)
  facts['name'] = name
  files.write_atomically(path, (json.dumps(facts, indent=2) + '\n').encode())
  return facts


def evaluate_export(config: ml_collections.ConfigDict, params, tracks: list[pipeline.Track], out_dir: pathlib.Path,
                    dataset: str, split: str) -> dict:
  """The exported model and both baselines on `tracks` (one run, uSDR only); prints the summary table."""
  summary = evaluate.evaluate_model(config, params, tracks, out_dir, dataset=dataset, split=split, runs=1,
                                    museval=False, label=NAME, checkpoint=str(EXPORT_DIR), total=len(tracks))
  print((out_dir / 'summary.md').read_text())
  return summary


def export_shipped(workdir: pathlib.Path, export_dir: pathlib.Path, default_config: str) -> int:
  """Exports the EMA weights of `workdir` to `export_dir` with the config's data_dir reset (no machine paths)."""
  step = inference.export_for_inference(workdir, export_dir)
  shipped = inference.read_config(export_dir)
  shipped.data.data_dir = config_lib.load_config(default_config).data.data_dir
  inference.save_config(export_dir, shipped)
  print(f'exported step {step} of {workdir} to {export_dir} '
        f'({(export_dir / inference.PARAMS_FILE).stat().st_size / 2**20:.1f} MiB)')
  return step


def mir1k_recipe(args: argparse.Namespace) -> None:
  """Prepare MIR-1K and synthetic songs, train the spectral model and the baseline side by side, export both,
  benchmark them."""
  diffvox = [sys.executable, '-m', 'diffvox_jax.cli']
  for dataset in (['mir1k', '--manual-dir', str(args.mir1k)],
                  ['synthetic', '--num-songs', str(MIR1K_SYNTHETIC_SONGS)]):
    prepare = diffvox + ['prepare', '--dataset', *dataset, '--config', 'mir1k_mask', '--data-dir', str(args.data_dir)]
    print('$', shlex.join(prepare))
    subprocess.run(prepare, check=True)
  pin = shutil.which('taskset') is not None and (os.cpu_count() or 1) >= len(MIR1K_MODELS)
  env = {**os.environ, 'XLA_FLAGS': '--xla_cpu_multi_thread_eigen=false'} if pin else dict(os.environ)
  runs = []
  for core, (config, run, _) in enumerate(MIR1K_MODELS):
    command = diffvox + ['train', '--config', config, '--workdir', str(args.workdir / run),
                         f'--config.data.data_dir={args.data_dir}', '--config.data.read_threads=1']
    command = (['taskset', '-c', str(core)] if pin else []) + command
    print('$', shlex.join(command))
    log = open(args.workdir / f'{run}.log', 'a')  # noqa: SIM115 (closed after the run)
    runs.append((run, time.perf_counter(), log, subprocess.Popen(command, env=env, stdout=log, stderr=log)))
  for run, start, log, process in runs:
    if process.wait():
      raise SystemExit(f'training {run} failed (exit {process.returncode}); see {args.workdir / run}.log')
    log.close()
    record_training_time(args.workdir / run, time.perf_counter() - start,
                         checkpoint_lib.latest_step(args.workdir / run), name=run)
  for config, run, name in MIR1K_MODELS:
    export_shipped(args.workdir / run, PRETRAINED / name, config)
  bench = [sys.executable, str(REPO_ROOT / 'tools' / 'bench_quality.py'), '--checkpoint',
           str(PRETRAINED / MIR1K_MODELS[0][2]), '--baseline', str(PRETRAINED / MIR1K_MODELS[1][2]),
           '--out', str(args.workdir / 'bench_quality.json')]
  print('$', shlex.join(bench))
  subprocess.run(bench, check=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--recipe', choices=('mir1k', 'demo'), default='mir1k')
  parser.add_argument('--workdir', type=pathlib.Path, default=pathlib.Path('runs/pretrained'))
  parser.add_argument('--data-dir', type=pathlib.Path, default=pathlib.Path('data_cache/pretrained'))
  parser.add_argument('--mir1k', type=pathlib.Path, default=MIR1K, help='MIR-1K folder (train/ and dev/).')
  parser.add_argument('--num-songs', type=int, default=96, help='synthetic songs (the last tenth are held out).')
  parser.add_argument('--mir1k-clips', type=int, default=78, help='MIR-1K dev clips to evaluate on (78: all).')
  args = parser.parse_args()
  args.workdir.mkdir(parents=True, exist_ok=True)
  if args.recipe == 'mir1k':
    mir1k_recipe(args)
    return
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
  export_shipped(args.workdir, EXPORT_DIR, demo.DEMO_CONFIG)
  print(f'training wall time so far {facts["train_wall_s_total"] / 60:.1f} min')

  export_config, params = inference.load_for_inference(EXPORT_DIR)
  synthetic = list(pipeline.tracks(config, demo.DATASET, demo.TEST_SPLIT))
  evaluate_export(export_config, params, synthetic, args.workdir / 'evaluation' / 'synthetic', demo.DATASET,
                  demo.TEST_SPLIT)
  evaluate_export(export_config, params, mir1k_tracks(MIR1K_DEV, args.mir1k_clips),
                  args.workdir / 'evaluation' / 'mir1k', 'mir1k', 'dev')


if __name__ == '__main__':
  main()
