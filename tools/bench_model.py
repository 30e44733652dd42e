"""One network evaluation of the generator and of the conditioner: parameters, compile time, forward time, FLOPs.

Times `model.apply(..., method='denoise')` (the generator, run T times per chunk by the sampler) and
`model.apply(..., method='condition')` (the conditioner and heads, run once per chunk) on one stereo chunk, batch 1,
after a warm-up call, with the config's attention implementation ('auto': blockwise on CPU for long sequences).
FLOPs come from XLA's cost analysis of the same functions lowered with `attention_impl='xla'`: the blockwise form
runs its tiles in loops whose bodies the cost analysis counts once, the full-matrix form has the same arithmetic
and is counted exactly. From the two times it derives the paper's timing protocol (T=50 over 12 s = five 3 s chunks
at 20% overlap, one conditioner call and T generator calls per chunk) on this machine.

    .venv/bin/python tools/bench_model.py                       # paper RT size, 3 s (131072 samples); minutes on CPU
    .venv/bin/python tools/bench_model.py --config cpu_tiny --out bench_model_tiny.json
    .venv/bin/python tools/bench_model.py --flops-only \
        --override 'model.generator.attention=(False, False, False, True, True, True, True)'

Prints a table and writes JSON; the last line is `generator_params=N conditioner_params=N generator_forward_s=X
conditioner_forward_s=X generator_gflops=X conditioner_gflops=X`.
"""

import argparse
import functools
import math
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp

from diffvox_jax.config import load_config
from diffvox_jax.models import build_model, parameter_counts
from diffvox_jax.results import write_json

PAPER_STEPS = 50
PAPER_CHUNKS_PER_12S = 5  # 12 s in 3 s chunks with 20% overlap: hop 2.4 s.


def forward_functions(model):
  """(generator, conditioner) as pure functions of (variables, ...)."""
  generator = functools.partial(model.apply, method='denoise')
  conditioner = functools.partial(model.apply, method='condition')
  return generator, conditioner


def gflops(function, *args) -> float:
  """XLA's cost-analysis FLOPs of `function(*args)` in GFLOP (from the lowered HLO, nothing compiled)."""
  return jax.jit(function).lower(*args).cost_analysis()['flops'] / 1e9


def time_forward(function, args, repeats: int) -> dict:
  """Compiles `function`, runs it once to warm up, then `repeats` timed calls."""
  start = time.perf_counter()
  compiled = jax.jit(function).lower(*args).compile()
  compile_s = time.perf_counter() - start
  output = compiled(*args)
  jax.block_until_ready(output)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  return {'compile_s': compile_s, 'forward_s': statistics.median(times), 'forward_runs_s': times,
          'output': output}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='diffdmx_rt', help='config name or path')
  parser.add_argument('--length', type=int, default=None, help='chunk length in samples (default sampler.chunk)')
  parser.add_argument('--repeats', type=int, default=2, help='timed calls after the warm-up call')
  parser.add_argument('--override', action='append', default=[], help='config override FIELD=VALUE (repeatable)')
  parser.add_argument('--flops-only', action='store_true', help='count FLOPs and parameters, skip the timing')
  parser.add_argument('--out', default='bench_model.json')
  args = parser.parse_args()

  config = load_config(args.config, args.override)
  length = args.length or config.sampler.chunk
  counts = parameter_counts(config)
  model = build_model(config)
  channels = config.data.channels
  mixture = jax.random.normal(jax.random.key(1), (1, length, channels), jnp.float32) * 0.1
  x_sigma = jax.random.normal(jax.random.key(2), (1, length, channels), jnp.float32)
  sigma = jnp.full((1,), 0.5, jnp.float32)
  short = jnp.zeros((1, math.prod(config.model.factors), channels), jnp.float32)
  if args.flops_only:
    variables = jax.eval_shape(model.init, jax.random.key(0), short, sigma, short)
    features = jax.eval_shape(functools.partial(model.apply, method='condition'), variables, mixture).features
    conditioner_run, generator_run = ({'compile_s': None, 'forward_s': None, 'forward_runs_s': []} for _ in range(2))
  else:
    variables = jax.jit(model.init)(jax.random.key(0, impl='unsafe_rbg'), short, sigma, short)
    generator, conditioner = forward_functions(model)
    conditioner_run = time_forward(conditioner, (variables, mixture), args.repeats)
    features = conditioner_run.pop('output').features
    generator_run = time_forward(generator, (variables, x_sigma, sigma, features), args.repeats)
    generator_run.pop('output')

  counted = build_model(load_config(args.config, args.override + ['model.attention_impl="xla"']))
  counted_generator, counted_conditioner = forward_functions(counted)
  generator_run['gflops'] = gflops(counted_generator, variables, x_sigma, sigma, features)
  conditioner_run['gflops'] = gflops(counted_conditioner, variables, mixture)

  chunk_s = length / config.data.sample_rate
  protocol_s = None
  if not args.flops_only:
    protocol_s = PAPER_CHUNKS_PER_12S * (conditioner_run['forward_s'] + PAPER_STEPS * generator_run['forward_s'])
  result = {
      'config': args.config, 'overrides': args.override, 'length': length, 'chunk_seconds': chunk_s, 'batch': 1,
      'dtype': config.model.dtype, 'attention_impl': config.model.attention_impl, 'parameters': counts,
      'generator': generator_run, 'conditioner': conditioner_run,
      'paper_protocol_estimate_s': protocol_s,
      'paper_protocol': f'{PAPER_CHUNKS_PER_12S} chunks x (1 conditioner + {PAPER_STEPS} generator calls), '
                        'derived from the single-call times',
      'flops_method': "XLA cost analysis of jax.jit(f).lower(...) with model.attention_impl='xla'",
      'machine': {'platform': platform.platform(), 'cpus': os.cpu_count(), 'backend': jax.default_backend(),
                  'devices': [str(d) for d in jax.devices()]},
      'load_average_end': os.getloadavg(),
  }
  write_json(args.out, result)

  print(f'{args.config}: one stereo chunk of {length} samples ({chunk_s:.2f} s), batch 1, {config.model.dtype}, '
        f'attention {config.model.attention_impl}, {jax.default_backend()}')
  print(f'{"part":<12} {"params":>12} {"compile s":>10} {"forward s":>10} {"GFLOP":>9}')
  for name, run in (('generator', generator_run), ('conditioner', conditioner_run)):
    print(f'{name:<12} {counts[name]:>12,} {number(run["compile_s"], 1):>10} {number(run["forward_s"], 2):>10} '
          f'{run["gflops"]:>9.1f}')
  print(f'{"aux_heads":<12} {counts["aux_heads"]:>12,}')
  print(f'{"total":<12} {counts["total"]:>12,}')
  print(f'paper protocol (T={PAPER_STEPS} over 12 s, {PAPER_CHUNKS_PER_12S} chunks) on this machine: '
        f'{number(protocol_s, 1)} s (derived); wrote {args.out}')
  print(f'generator_params={counts["generator"]} conditioner_params={counts["conditioner"]} '
        f'generator_forward_s={number(generator_run["forward_s"], 3)} '
        f'conditioner_forward_s={number(conditioner_run["forward_s"], 3)} '
        f'generator_gflops={generator_run["gflops"]:.1f} conditioner_gflops={conditioner_run["gflops"]:.1f}')


def number(value: float | None, digits: int) -> str:
  """`value` with `digits` decimals, or 'nan' where it was not measured (--flops-only)."""
  return 'nan' if value is None else f'{value:.{digits}f}'


if __name__ == '__main__':
  main()
