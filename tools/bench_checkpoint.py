"""Checkpoint benchmark: how long a training checkpoint takes to save and finalize, against a preemption's grace.

    .venv/bin/python tools/bench_checkpoint.py                        # the paper's RT model into a temp folder
    .venv/bin/python tools/bench_checkpoint.py --config cpu_tiny --workdir /mnt/disk/bench --repeats 5

A `TrainState` of the config's shapes (parameters, EMA and AdamW moments, filled with random normals so that no
compression flatters the figures) is saved `--repeats` times with the training loop's own manager
(`train/checkpoint.py`, the iterator state included). Per save: the blocking part (`manager.save`, which copies the
arrays off the devices and starts the writes), the finalisation (`wait_until_finished`: writes, metadata, the
rename of the temporary folder), their sum, and the restore. On SIGTERM the loop saves at once and waits for the
finalisation, so the sum must fit the grace period (`--grace-s`, 30 s on Compute Engine and Cloud TPU VMs) with room
to spare. The workdir's storage decides the figures: run it on the disk the runs use.

Prints a table, writes JSON (`--json`), and ends with the line
`gib=X save_s=X finalize_s=X total_s=X restore_s=X grace_s=X fits=0|1` (medians over the repeats).
"""

import argparse
import os
import pathlib
import platform
import shutil
import tempfile
import time

import jax
import numpy as np

from diffvox_jax import files
from diffvox_jax.config import load_config
from diffvox_jax.models import build_model
from diffvox_jax.train import checkpoint, parallel


def random_state(config_name: str, overrides: list[str]):
  """(abstract replicated state, a state of those shapes filled with random normals, its size in bytes)."""
  config = load_config(config_name, overrides)
  model, mesh = build_model(config), parallel.make_mesh()
  abstract = parallel.abstract_sharded_state(model, config, mesh)
  generator = np.random.default_rng(0)

  def fill(leaf):
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      return jax.device_put(jax.random.key(0), leaf.sharding)
    values = generator.standard_normal(leaf.shape).astype(leaf.dtype) if leaf.shape else np.zeros((), leaf.dtype)
    return jax.device_put(values, leaf.sharding)

  state = jax.tree.map(fill, abstract)
  size = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(abstract))
  return abstract, state, size


def time_saves(workdir: pathlib.Path, abstract, state, repeats: int) -> list[dict]:
  """One row per save: blocking save, finalisation and restore seconds."""
  rows = []
  manager = checkpoint.make_manager(workdir, keep=2)
  try:
    for index in range(repeats):
      state = state.replace(step=state.step + 1) if index else state
      start = time.perf_counter()
      checkpoint.save_checkpoint(manager, state, {'next_index': index})
      saved = time.perf_counter()
      manager.wait_until_finished()
      finished = time.perf_counter()
      restored, _ = checkpoint.restore_checkpoint(manager, abstract)
      jax.block_until_ready(restored)
      rows.append({'save_s': saved - start, 'finalize_s': finished - saved, 'total_s': finished - start,
                   'restore_s': time.perf_counter() - finished})
  finally:
    manager.close()
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='diffdmx_rt', help='config whose training state is saved')
  parser.add_argument('--override', action='append', default=[], help='config override, e.g. model.dtype=bfloat16')
  parser.add_argument('--workdir', default='', help='where to save (default: a temp folder, removed after)')
  parser.add_argument('--repeats', type=int, default=3, help='saves to time')
  parser.add_argument('--grace-s', type=float, default=30.0, help='the preemption grace period to fit')
  parser.add_argument('--json', default='bench_checkpoint.json', help='where to write the results')
  args = parser.parse_args()
  if args.repeats < 1:
    parser.error('--repeats must be at least 1')

  abstract, state, size = random_state(args.config, args.override)
  scratch = None if args.workdir else tempfile.mkdtemp(prefix='bench_checkpoint_')
  workdir = pathlib.Path(args.workdir or scratch)
  try:
    rows = time_saves(workdir, abstract, state, args.repeats)
  finally:
    if scratch:
      shutil.rmtree(scratch, ignore_errors=True)
  medians = {key: float(np.median([row[key] for row in rows])) for key in rows[0]}
  gib = size / 2.0 ** 30
  machine = {'backend': jax.default_backend(), 'processor': platform.processor() or platform.machine(),
             'cpu_count': os.cpu_count(), 'storage': 'temp folder' if scratch else 'given workdir'}
  summary = {'config': args.config, 'overrides': args.override, 'gib': gib, 'grace_s': args.grace_s, **medians,
             'fits': medians['total_s'] < args.grace_s}
  files.write_json(args.json, {'machine': machine, 'summary': summary, 'rows': rows})

  header = f'{"save":>4} {"blocking s":>10} {"finalize s":>10} {"total s":>8} {"restore s":>9}'
  print(f'{args.config}: {gib:.3f} GiB of training state (params, EMA, AdamW moments)')
  print(header)
  print('-' * len(header))
  for index, row in enumerate(rows, 1):
    print(f'{index:>4} {row["save_s"]:>10.2f} {row["finalize_s"]:>10.2f} {row["total_s"]:>8.2f} '
          f'{row["restore_s"]:>9.2f}')
  print(f'results: {args.json}')
  print(f'gib={gib:.3f} save_s={medians["save_s"]:.2f} finalize_s={medians["finalize_s"]:.2f} '
        f'total_s={medians["total_s"]:.2f} restore_s={medians["restore_s"]:.2f} grace_s={args.grace_s:g} '
        f'fits={int(summary["fits"])}')


if __name__ == '__main__':
  main()
