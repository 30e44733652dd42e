"""Training-step benchmark: compile time, steps/s and examples/s of the data-parallel train step.

    .venv/bin/python tools/bench_train.py                  # cpu_tiny, then the paper's RT model
    .venv/bin/python tools/bench_train.py --skip-rt        # cpu_tiny only

Cases: `cpu_tiny` at its own batch and segment, and the paper's RT model (`configs/diffdmx_rt.py`, 3 s segments)
at the smallest batch that runs (one example per device) on a CPU, or at the paper's batch 32 in float32 and
bfloat16 on a GPU. The step runs over every visible device on random in-memory batches: the input pipeline is
left out (`tools/bench_pipeline.py` measures it). Times: the state initialisation (compilation and run), the
ahead-of-time `lower().compile()` of the train step, then the timed steps. On a CPU the RT step takes minutes,
so only `--rt-steps` steps (1 by default) are timed after a warm-up step, and `--rt-segment` can shorten the
crop (a CPU run at the paper's 3 s takes over an hour to compile and run; the per-sample cost is close to linear).

Prints a table, writes JSON (`--json`), and ends with the line
`tiny_steps_per_s=X tiny_examples_per_s=X rt_steps_per_s=X rt_batch=N`.
"""

import argparse
import json
import math
import os
import pathlib
import platform
import time

import jax
import numpy as np

from diffvox_jax import files
from diffvox_jax.config import load_config
from diffvox_jax.models import build_model
from diffvox_jax.train import loop, parallel


def bench_case(name: str, config_name: str, overrides: list[str], timed_steps: int) -> dict:
  """Compiles and times the train step of one config; returns one table row."""
  config = load_config(config_name, overrides)
  model, mesh = build_model(config), parallel.make_mesh()
  parallel.check_batch_size(config, mesh)
  init_rng, train_rng, _ = loop.run_keys(config.seed)

  start = time.perf_counter()
  state = jax.block_until_ready(parallel.create_sharded_state(model, config, init_rng, mesh))
  compile_init_s = time.perf_counter() - start
  parameters = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(state.params))

  generator = np.random.default_rng(0)
  shape = (config.train.batch_size, config.data.segment, config.data.channels)
  batch = {key: 0.1 * generator.standard_normal(shape, np.float32) for key in ('vocals', 'mixture')}
  batches = parallel.stack_and_shard([batch] * config.train.steps_per_dispatch, mesh)
  start = time.perf_counter()
  multi_step = parallel.make_parallel_train_step(model, config, mesh).lower(state, batches, train_rng).compile()
  compile_step_s = time.perf_counter() - start

  state, metrics = multi_step(state, batches, train_rng)  # warm-up
  jax.block_until_ready(metrics)
  dispatches = max(1, timed_steps // config.train.steps_per_dispatch)
  start = time.perf_counter()
  for _ in range(dispatches):
    state, metrics = multi_step(state, batches, train_rng)
  loss = float(jax.device_get(metrics['loss'])[-1])
  elapsed = time.perf_counter() - start
  steps = dispatches * config.train.steps_per_dispatch
  print(f'{name}: init {compile_init_s:.1f} s, compile {compile_step_s:.1f} s, {steps} steps in {elapsed:.1f} s',
        flush=True)
  return {
      'case': name, 'config': config_name, 'overrides': overrides, 'devices': mesh.devices.size,
      'batch': config.train.batch_size, 'segment': config.data.segment, 'dtype': config.model.dtype,
      'parameters_m': parameters / 1e6, 'compile_init_s': compile_init_s, 'compile_step_s': compile_step_s,
      'timed_steps': steps, 'steps_per_s': steps / elapsed, 'examples_per_s': steps * config.train.batch_size / elapsed,
      'final_loss': loss,
  }


def print_table(rows: list[dict]) -> None:
  header = (f'{"case":<12} {"dev":>3} {"batch":>5} {"segment":>7} {"dtype":>8} {"params M":>8} {"init s":>7} '
            f'{"compile s":>9} {"steps":>5} {"steps/s":>8} {"examples/s":>10}')
  print(header)
  print('-' * len(header))
  for row in rows:
    print(f'{row["case"]:<12} {row["devices"]:>3} {row["batch"]:>5} {row["segment"]:>7} {row["dtype"]:>8} '
          f'{row["parameters_m"]:>8.2f} {row["compile_init_s"]:>7.1f} {row["compile_step_s"]:>9.1f} '
          f'{row["timed_steps"]:>5} {row["steps_per_s"]:>8.4f} {row["examples_per_s"]:>10.3f}')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--tiny-steps', type=int, default=10, help='timed cpu_tiny steps after the warm-up step')
  parser.add_argument('--rt-steps', type=int, default=1, help='timed RT steps after the warm-up step')
  parser.add_argument('--rt-segment', type=int, default=0,
                      help="RT crop length in samples, a multiple of 128 (default: the config's 3 s)")
  parser.add_argument('--skip-rt', action='store_true', help='only the cpu_tiny case')
  parser.add_argument('--json', default='bench_train.json', help='where to write the results')
  args = parser.parse_args()

  devices = len(jax.devices())
  rows = [bench_case('cpu_tiny', 'cpu_tiny', [], args.tiny_steps)]
  if not args.skip_rt:
    # On a CPU the smallest batch: one example per device.
    settings = [(32, 'float32'), (32, 'bfloat16')] if jax.default_backend() == 'gpu' else [(devices, 'float32')]
    segment = [f'data.segment={args.rt_segment}'] if args.rt_segment else []
    for batch, dtype in settings:
      overrides = [f'train.batch_size={batch}', f"model.dtype='{dtype}'", *segment]
      rows.append(bench_case(f'rt_{dtype}', 'diffdmx_rt', overrides, args.rt_steps))
  machine = {'backend': jax.default_backend(), 'devices': [str(d) for d in jax.devices()],
             'processor': platform.processor() or platform.machine(), 'cpu_count': os.cpu_count()}
  results = json.dumps({'machine': machine, 'rows': rows}, indent=2)
  files.write_atomically(pathlib.Path(args.json), results.encode())
  print_table(rows)
  print(f'results: {args.json}')
  tiny = rows[0]
  rt = rows[1] if len(rows) > 1 else {'steps_per_s': float('nan'), 'batch': 0}
  print(f'tiny_steps_per_s={tiny["steps_per_s"]:.4f} tiny_examples_per_s={tiny["examples_per_s"]:.3f} '
        f'rt_steps_per_s={rt["steps_per_s"]:.5f} rt_batch={rt["batch"]}')


if __name__ == '__main__':
  main()
