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

Memory (`--memory CONFIG`, default the paper's RT model `diffdmx_rt`): the compiled step's memory per device
(`memory_analysis()` of the ahead-of-time compilation; nothing runs) at 4 examples per device, in each of
`--memory-dtypes`, plain, with `model.remat='nothing_saveable'`, with `train.accumulation_steps=4`, and with both.
The temporaries (activations kept for the backward pass) are also given per example. XLA:CPU does not honour
`jax.checkpoint` (jax-ml/jax#19822), so the compiled remat rows show a reduction on an accelerator only; beside
them, the residuals per example that JAX's own `vjp` of the loss keeps (traced at batch 1, nothing compiled),
where remat shows on every backend.

The loop (`--loop-steps`): the whole training loop (`loop.train_and_evaluate` on cpu_tiny, reading a temporary
dataset of noise songs through the augmenting pipeline) with `train.steps_per_dispatch` 1 and 4, each with
`train.prefetch_to_device` on (the next batches fetched and copied while a dispatch computes) and off (the host
waits for each dispatch). Run it with `XLA_FLAGS=--xla_force_host_platform_device_count=2` for 2 CPU devices.

Prints the tables, writes JSON (`--json`), and ends with the line
`tiny_steps_per_s=X tiny_examples_per_s=X rt_steps_per_s=X rt_batch=N rt_temp_gb_per_example=X
rt_temp_gb_per_example_remat=X rt_residual_gb_per_example=X rt_residual_gb_per_example_remat=X
loop_steps_per_s_sync1=X loop_steps_per_s_prefetch4=X` (float32 memory of the memory config per example, GB =
1e9 bytes, nan when it is not diffdmx_rt; the loop at 1 step per dispatch without prefetch and at 4 with it).
`--memory-only` times nothing and prints just the four memory keys.
"""

import argparse
import json
import math
import os
import pathlib
import platform
import tempfile
import time

import jax
import numpy as np
import tensorflow_datasets as tfds
from bench_pipeline import write_noise_songs

from diffvox_jax import files
from diffvox_jax.config import load_config
from diffvox_jax.data import builders
from diffvox_jax.models import build_model
from diffvox_jax.train import loop, parallel, step


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


GB = 1e9
MEMORY_VARIANTS = (('plain', []), ('remat', ["model.remat='nothing_saveable'"]),
                   ('accum4', ['train.accumulation_steps=4']),
                   ('remat+accum4', ["model.remat='nothing_saveable'", 'train.accumulation_steps=4']))


def memory_case(config_name: str, overrides: list[str]) -> dict:
  """Compiled memory of one train step per device (`lower().compile().memory_analysis()`, nothing runs): bytes of
  the arguments, outputs and temporaries (activations kept for the backward pass live in the temporaries)."""
  config = load_config(config_name, overrides)
  model, mesh = build_model(config), parallel.make_mesh()
  parallel.check_batch_size(config, mesh)
  state = parallel.abstract_sharded_state(model, config, mesh)
  shape = (1, config.train.batch_size, config.data.segment, config.data.channels)
  batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, parallel.AXIS))
  batches = {key: jax.ShapeDtypeStruct(shape, np.float32, sharding=batch_sharding) for key in ('vocals', 'mixture')}
  start = time.perf_counter()
  compiled = parallel.make_parallel_train_step(model, config, mesh).lower(state, batches,
                                                                          loop.run_keys(0)[1]).compile()
  stats = compiled.memory_analysis()
  gib = 2.0 ** 30
  per_device_batch = config.train.batch_size // mesh.devices.size
  row = {'config': config_name, 'overrides': overrides, 'dtype': config.model.dtype,
         'batch': config.train.batch_size, 'per_device_batch': per_device_batch, 'segment': config.data.segment,
         'compile_s': time.perf_counter() - start,
         'argument_gib': stats.argument_size_in_bytes / gib, 'output_gib': stats.output_size_in_bytes / gib,
         'temp_gib': stats.temp_size_in_bytes / gib,
         'temp_gb_per_example': stats.temp_size_in_bytes / GB / per_device_batch}
  print(f'memory {config_name} {overrides}: temporaries {row["temp_gib"]:.3f} GiB per device', flush=True)
  return row


def tree_bytes(tree) -> int:
  return sum(math.prod(leaf.shape) * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree))


def residual_gb_per_example(config_name: str, overrides: list[str]) -> float:
  """GB per example that the backward pass of the training loss keeps: the residuals of `jax.vjp` at batch 1,
  less the parameters. Traced, not compiled (`jax.eval_shape`), so it shows what `model.remat` saves on any
  backend, also on one whose compiler ignores it."""
  config = load_config(config_name, [*overrides, 'train.batch_size=1'])
  model = build_model(config)
  params = parallel.abstract_sharded_state(model, config, parallel.make_mesh(jax.devices()[:1])).params
  loss_fn = step.make_loss_fn(model, config)
  audio = jax.ShapeDtypeStruct((1, config.data.segment, config.data.channels), np.float32)

  def backward_pass(params, batch):
    return jax.vjp(lambda p: loss_fn(p, batch, jax.random.key(0), True)[0], params)[1]

  residuals = jax.eval_shape(backward_pass, params, {'vocals': audio, 'mixture': audio})
  return (tree_bytes(residuals) - tree_bytes(params)) / GB


def memory_key_line(config_name: str, rows: list[dict]) -> str:
  """`rt_temp_gb_per_example=X rt_temp_gb_per_example_remat=X rt_residual_gb_per_example=X
  rt_residual_gb_per_example_remat=X`: float32 compiled temporaries and traced residuals per example, plain and
  with remat (nan unless the memory config is the RT model)."""
  rt_rows = [row for row in rows if row['dtype'] == 'float32'] if config_name == 'diffdmx_rt' else []
  keys = []
  for measure in ('temp', 'residual'):
    per_example = {row['variant']: row[f'{measure}_gb_per_example'] for row in rt_rows}
    keys += [f'rt_{measure}_gb_per_example={per_example.get("plain", float("nan")):.3f}',
             f'rt_{measure}_gb_per_example_remat={per_example.get("remat", float("nan")):.3f}']
  return ' '.join(keys)


LOOP_VARIANTS = ((1, False), (1, True), (4, False), (4, True))  # (train.steps_per_dispatch, prefetch_to_device)


def loop_case(data_dir: pathlib.Path, steps: int, steps_per_dispatch: int, prefetch: bool) -> dict:
  """Steps/s of the whole training loop (`loop.train_and_evaluate`: the grain pipeline with augmentation, the
  host-to-device copies, the metrics, one checkpoint at the end) on cpu_tiny, counted from the end of the first
  dispatch, so compilation is left out."""
  config = load_config('cpu_tiny', [
      f"data.data_dir='{data_dir}'", "data.sources='stems_folder:1.0'", f'train.num_steps={steps}',
      f'train.steps_per_dispatch={steps_per_dispatch}', f'train.prefetch_to_device={prefetch}',
      f'train.log_every={steps}', f'train.checkpoint_every={steps}', 'train.eval_every=0'])
  with tempfile.TemporaryDirectory(prefix='bench_train_loop_') as workdir:
    start = time.perf_counter()
    loop.train_and_evaluate(config, workdir)
    wall_s = time.perf_counter() - start
    last = json.loads((pathlib.Path(workdir) / loop.METRICS_FILE).read_text().splitlines()[-1])
  row = {'steps_per_dispatch': steps_per_dispatch, 'prefetch_to_device': prefetch, 'steps': steps,
         'devices': jax.device_count(), 'batch': config.train.batch_size, 'wall_s': wall_s,
         'steps_per_s': last['train/steps_per_s']}
  print(f'loop: {steps_per_dispatch} steps per dispatch, prefetch {prefetch}: {row["steps_per_s"]:.4f} steps/s',
        flush=True)
  return row


def loop_cases(steps: int) -> list[dict]:
  """`loop_case` for every `LOOP_VARIANTS` on a temporary dataset of noise songs (`bench_pipeline.py`'s)."""
  tfds.disable_progress_bar()
  with tempfile.TemporaryDirectory(prefix='bench_train_data_') as tmp:
    songs, data_dir = pathlib.Path(tmp) / 'songs', pathlib.Path(tmp) / 'tfds'
    write_noise_songs(songs, songs=6, seconds=20.0, rate=22050)
    builders.prepare(builders.make_builder('stems_folder', data_dir, 22050, 2), songs)
    return [loop_case(data_dir, steps, *variant) for variant in LOOP_VARIANTS]


def print_rows(columns: list[tuple[str, str, str, str]], rows: list[dict]) -> None:
  """One table: `columns` are (title, row key, alignment and width, number format), e.g.
  ('steps/s', 'steps_per_s', '>8', '.4f'); a missing or None value prints as nan."""
  header = ' '.join(f'{title:{width}}' for title, _, width, _ in columns)
  print(header)
  print('-' * len(header))
  for row in rows:
    values = [float('nan') if row.get(key) is None else row[key] for _, key, _, _ in columns]
    print(' '.join(f'{str(value) if isinstance(value, bool) else value:{width}{number}}'
                   for value, (_, _, width, number) in zip(values, columns, strict=True)))


TRAIN_COLUMNS = [('case', 'case', '<12', ''), ('dev', 'devices', '>3', ''), ('batch', 'batch', '>5', ''),
                 ('segment', 'segment', '>7', ''), ('dtype', 'dtype', '>8', ''),
                 ('params M', 'parameters_m', '>8', '.2f'), ('init s', 'compile_init_s', '>7', '.1f'),
                 ('compile s', 'compile_step_s', '>9', '.1f'), ('steps', 'timed_steps', '>5', ''),
                 ('steps/s', 'steps_per_s', '>8', '.4f'), ('examples/s', 'examples_per_s', '>10', '.3f')]
MEMORY_COLUMNS = [('variant', 'variant', '<14', ''), ('config', 'config', '<11', ''), ('dtype', 'dtype', '>8', ''),
                  ('batch/dev', 'per_device_batch', '>9', ''), ('segment', 'segment', '>7', ''),
                  ('args GiB', 'argument_gib', '>9', '.3f'), ('temp GiB', 'temp_gib', '>9', '.3f'),
                  ('temp GB/ex', 'temp_gb_per_example', '>10', '.3f'),
                  ('resid GB/ex', 'residual_gb_per_example', '>11', '.3f')]
LOOP_COLUMNS = [('steps/dispatch', 'steps_per_dispatch', '>14', ''), ('prefetch', 'prefetch_to_device', '>8', ''),
                ('devices', 'devices', '>7', ''), ('steps', 'steps', '>5', ''),
                ('steps/s', 'steps_per_s', '>8', '.4f'), ('wall s', 'wall_s', '>7', '.1f')]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--tiny-steps', type=int, default=10, help='timed cpu_tiny steps after the warm-up step')
  parser.add_argument('--rt-steps', type=int, default=1, help='timed RT steps after the warm-up step')
  parser.add_argument('--rt-segment', type=int, default=0,
                      help="RT crop length in samples, a multiple of 128 (default: the config's 3 s)")
  parser.add_argument('--skip-rt', action='store_true', help='only the cpu_tiny case')
  parser.add_argument('--memory', default='diffdmx_rt',
                      help='config whose compiled step memory is reported with and without remat and gradient '
                           'accumulation ("" = none; diffdmx_rt takes a minute or two per variant on a CPU)')
  parser.add_argument('--memory-dtypes', default='float32,bfloat16',
                      help='comma-separated model.dtype values of the memory cases')
  parser.add_argument('--memory-only', action='store_true', help='only the memory cases; nothing is timed')
  parser.add_argument('--memory-batch', type=int, default=0,
                      help='global batch of the memory cases (default: 4 per device, a multiple of 4)')
  parser.add_argument('--loop-steps', type=int, default=24,
                      help='steps of each training-loop case (cpu_tiny, steps_per_dispatch 1 and 4, prefetch on '
                           'and off; 0 = none)')
  parser.add_argument('--json', default='bench_train.json', help='where to write the results')
  args = parser.parse_args()

  devices = len(jax.devices())
  rows = [] if args.memory_only else [bench_case('cpu_tiny', 'cpu_tiny', [], args.tiny_steps)]
  if not (args.skip_rt or args.memory_only):
    # On a CPU the smallest batch: one example per device.
    settings = [(32, 'float32'), (32, 'bfloat16')] if jax.default_backend() == 'gpu' else [(devices, 'float32')]
    segment = [f'data.segment={args.rt_segment}'] if args.rt_segment else []
    for batch, dtype in settings:
      overrides = [f'train.batch_size={batch}', f"model.dtype='{dtype}'", *segment]
      rows.append(bench_case(f'rt_{dtype}', 'diffdmx_rt', overrides, args.rt_steps))
  memory = []
  if args.memory:
    batch = args.memory_batch or 4 * devices
    segment = [f'data.segment={args.rt_segment}'] if args.rt_segment and args.memory == 'diffdmx_rt' else []
    for dtype in args.memory_dtypes.split(','):
      for variant, overrides in MEMORY_VARIANTS:
        row = memory_case(args.memory, [f'train.batch_size={batch}', f'model.dtype={dtype!r}', *segment, *overrides])
        residual = (None if 'accum' in variant else
                    residual_gb_per_example(args.memory, [f'model.dtype={dtype!r}', *segment, *overrides]))
        memory.append({'variant': variant, **row, 'residual_gb_per_example': residual})
  loops = loop_cases(args.loop_steps) if args.loop_steps and not args.memory_only else []
  machine = {'backend': jax.default_backend(), 'devices': [str(d) for d in jax.devices()],
             'processor': platform.processor() or platform.machine(), 'cpu_count': os.cpu_count()}
  results = json.dumps({'machine': machine, 'rows': rows, 'memory': memory, 'loop': loops}, indent=2)
  files.write_atomically(pathlib.Path(args.json), results.encode())
  if rows:
    print_rows(TRAIN_COLUMNS, rows)
  if memory:
    print_rows(MEMORY_COLUMNS, memory)
  if loops:
    print_rows(LOOP_COLUMNS, loops)
  print(f'results: {args.json}')
  if args.memory_only:
    print(memory_key_line(args.memory, memory))
    return
  tiny = rows[0]
  rt = rows[1] if len(rows) > 1 else {'steps_per_s': float('nan'), 'batch': 0}
  loop_rate = {(row['steps_per_dispatch'], row['prefetch_to_device']): row['steps_per_s'] for row in loops}
  print(f'tiny_steps_per_s={tiny["steps_per_s"]:.4f} tiny_examples_per_s={tiny["examples_per_s"]:.3f} '
        f'rt_steps_per_s={rt["steps_per_s"]:.5f} rt_batch={rt["batch"]} {memory_key_line(args.memory, memory)} '
        f'loop_steps_per_s_sync1={loop_rate.get((1, False), float("nan")):.4f} '
        f'loop_steps_per_s_prefetch4={loop_rate.get((4, True), float("nan")):.4f}')


if __name__ == '__main__':
  main()
