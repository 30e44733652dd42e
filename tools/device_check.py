"""The accelerator check: correctness against a committed CPU reference, the paper's sampling protocol, training
throughput, and optionally training on the minutes left. One command, sized for 15 minutes of a GPU.

    python tools/device_check.py --out "$OUT"                 # on the accelerator (tools/README.md: the command)
    python tools/device_check.py --dry-run --out /tmp/check   # the same script on a CPU at cpu_tiny size, < 1 min
    python tools/device_check.py --write-reference            # recomputes tests/data/device_reference.npz (CPU)

Sections, in order, each skipped (and said so) when the time budget (`--budget-s`) would be overrun:
1. `environment`: backend, devices, jax/jaxlib/flax/optax/orbax versions.
2. `correctness`: cpu_tiny with fixed parameters (numpy `RandomState`, scaled by fan-in), a fixed mixture and a
   fixed key: a 4-step stochastic sampler output (eta 0.4, 5 kHz high-pass noise) and one train step (its loss
   terms and the gradient) against the CPU reference, as relative L2 errors. float32 runs at matmul precision
   'highest' (GPUs otherwise use TF32 for float32) and must stay within `FLOAT32_TOLERANCE`; bfloat16 compute is
   reported against the same float32 reference with the looser `BFLOAT16_TOLERANCE`.
3. `sampling`: the paper's protocol at paper RT size (configs/diffdmx_rt.py, random parameters): 12 s of stereo
   44.1 kHz audio in five 3 s chunks (one batch), T = 50 with eta 0.4 and the 5 kHz high-pass, for float32 and
   bfloat16 and each attention implementation that applies (cuDNN only in half precision on a GPU); T = 20 and
   the few-step setting (DPM-Solver++(2M), 10 evaluations) with the 'auto' implementation. Compile time, seconds
   (median of 3 after a warm-up run) and real-time factor. Target: T = 50 over 12 s in under 0.5 s.
4. `training`: the RT train step at batch 32 of 3 s crops, float32 and bfloat16, over all devices: compiled
   memory, steps/s, examples/s, peak device memory, and model FLOP utilisation (XLA's FLOP count of the step over
   the time, against `PEAK_TFLOPS`). For the first dtype, the compiled memory at batch 32 with each memory saver
   (`model.remat`, `train.accumulation_steps`, both; XLA:CPU does not honour remat, so only an accelerator
   measures it). Where batch 32 does not fit, the first saver that fits is timed, else the largest power of two
   that does; the row says which (`memory_saver`, `batch`).
5. With `--train-minutes N`: `diffvox train` of `--train-config` on `--train-data` for N minutes (SIGTERM at the
   deadline: a checkpoint is saved), then the EMA weights exported to `OUT/model/` (config.json, params.msgpack).

`--dry-run` runs every section on the CPU with a two-level miniature of cpu_tiny (`DRY_RUN_MODEL`) in place of
cpu_tiny and the RT model, float32 timings only, fewer steps, and gradient accumulation as its one memory saver.
Everything goes to `OUT/device_check.json` and `OUT/device_check.log`; the last line printed is
`correct_float32=ok|FAIL correct_bfloat16=ok|FAIL t50_s=X t50_bf16_s=X train_examples_per_s=X mfu=X` (t50: the
longest sampler timed with the 'auto' attention; training: the first dtype timed, bfloat16 where both are).
"""

import argparse
import contextlib
import dataclasses
import importlib.metadata
import json
import math
import os
import pathlib
import platform
import signal
import statistics
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np

from diffvox_jax import inference, sampler
from diffvox_jax.chunking import chunk_plan, cut_chunks
from diffvox_jax.config import ConfigError, load_config
from diffvox_jax.models import build_model
from diffvox_jax.train import optimizer as optimizer_lib
from diffvox_jax.train import parallel
from diffvox_jax.train import step as step_lib
from diffvox_jax.train.state import TrainState, example_inputs

REFERENCE = pathlib.Path(__file__).resolve().parent.parent / 'tests' / 'data' / 'device_reference.npz'
FLOAT32_TOLERANCE = 1e-4  # relative L2 error, precision 'highest'.
BFLOAT16_TOLERANCE = 5e-2  # relative L2 error of bfloat16 compute against the float32 reference.
PEAK_TFLOPS = 790.0  # dense bf16 matrix products measured on the H200 (device/KINDS.md).
EXCERPT_SECONDS, EXCERPT_RATE = 12.0, 44100
ETA, CUTOFF_HZ = 0.4, 5000.0
REFERENCE_LENGTH = 8192  # samples of the correctness chunk (0.37 s at cpu_tiny's 22.05 kHz).
REFERENCE_STEPS = 4
GRADIENT_STRIDE = 128  # every 128th gradient entry goes into the reference (8,700 numbers for cpu_tiny).
# The dry run's model: cpu_tiny cut to two levels (factors 4 and 8), attention and injection at the second, no
# bottleneck transformer: its train step compiles in about 20 s on a CPU core, where cpu_tiny's takes a minute.
DRY_RUN_MODEL = ('model.factors=(4, 8)', 'model.generator.blocks=(1, 1)', 'model.generator.attention=(False, True)',
                 'model.generator.inject=(False, True)', 'model.conditioner.attention=(False, True)',
                 'model.conditioner.transformer_layers=0')
METRICS = ('loss', 'v_mse', 'latent_mse', 'reconstruction_mse', 'grad_norm')
PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy', 'ml-collections')


@dataclasses.dataclass(frozen=True)
class Plan:
  """What one mode measures: the correctness model (cpu_tiny plus overrides, also the reference's key), the model
  config of sections 3 and 4 and their sizes."""

  reference: str
  reference_overrides: tuple[str, ...]
  model_config: str
  model_overrides: tuple[str, ...]
  excerpt_seconds: float
  sampling_steps: tuple[int, ...]  # the first is timed for every dtype x attention implementation.
  few_step: tuple[str, int]  # (method, steps) of the few-step row.
  every_attention: bool  # time each attention implementation (else 'auto' only).
  timing_dtypes: tuple[str, ...]  # compute dtypes of sections 3 and 4.
  repeats: int
  train_batch: int
  train_overrides: tuple[str, ...]
  train_steps: int
  memory_savers: tuple[tuple[str, tuple[str, ...]], ...]  # (name, overrides) tried at the full batch, in order.


PLANS = {
    'device': Plan(reference='cpu_tiny', reference_overrides=(), model_config='diffdmx_rt', model_overrides=(),
                   excerpt_seconds=EXCERPT_SECONDS, sampling_steps=(50, 20), few_step=('dpmpp_2m', 10),
                   every_attention=True, timing_dtypes=('float32', 'bfloat16'), repeats=3, train_batch=32,
                   train_overrides=(), train_steps=5,
                   memory_savers=(('remat', ("model.remat='nothing_saveable'",)),
                                  ('accum8', ('train.accumulation_steps=8',)),
                                  ('remat+accum8', ("model.remat='nothing_saveable'", 'train.accumulation_steps=8')))),
    'dry_run': Plan(reference='dry_run', reference_overrides=DRY_RUN_MODEL, model_config='cpu_tiny',
                    model_overrides=DRY_RUN_MODEL + ('sampler.chunk=8192',), excerpt_seconds=1.0,
                    sampling_steps=(4,), few_step=('dpmpp_2m', 2), every_attention=False,
                    timing_dtypes=('float32',), repeats=1, train_batch=4, train_overrides=('data.segment=8192',),
                    train_steps=1, memory_savers=(('accum2', ('train.accumulation_steps=2',)),)),
}


class Report:
  """Collects results, mirrors every line to the log, and knows how much of the time budget is left."""

  def __init__(self, out: pathlib.Path, budget_s: float):
    self.out, self.budget_s, self.start = out, budget_s, time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    self.log = open(out / 'device_check.log', 'a')  # noqa: SIM115 (closed by `close`)
    self.results: dict = {'sections': {}, 'skipped': []}

  def say(self, line: str) -> None:
    print(line, flush=True)
    self.log.write(line + '\n')
    self.log.flush()

  def elapsed(self) -> float:
    return time.perf_counter() - self.start

  def has_time(self, what: str, needs_s: float) -> bool:
    """True when `needs_s` seconds fit in the budget; otherwise records `what` as skipped."""
    if self.elapsed() + needs_s <= self.budget_s:
      return True
    self.results['skipped'].append(what)
    self.say(f'skipped (time budget, {self.elapsed():.0f} of {self.budget_s:.0f} s used): {what}')
    return False

  def save(self) -> None:
    self.results['elapsed_s'] = round(self.elapsed(), 1)
    path = self.out / 'device_check.json'
    path.with_suffix('.tmp').write_text(json.dumps(self.results, indent=2, default=str) + '\n')
    path.with_suffix('.tmp').replace(path)

  def close(self) -> None:
    self.save()
    self.log.close()


def environment() -> dict:
  """Backend, devices and package versions."""
  versions = {}
  for name in PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  devices = jax.devices()
  return {'backend': jax.default_backend(), 'devices': [str(d) for d in devices],
          'device_kind': devices[0].device_kind, 'versions': versions, 'python': platform.python_version(),
          'host': platform.node(), 'cpu_count': os.cpu_count()}


# --- Correctness ------------------------------------------------------------------------------------------------


def param_shapes(config):
  """The config's parameter tree as `jax.ShapeDtypeStruct` leaves (`eval_shape`: nothing compiles)."""
  return jax.eval_shape(build_model(config).init, jax.random.key(0), *example_inputs(config))['params']


def reference_params(config) -> dict:
  """Fixed float32 parameters of the config's model: kernels N(0, 1/fan_in), biases N(0, 0.05^2), scales
  1 + N(0, 0.05^2), everything else N(0, 1) scaled like a bias (numpy's RandomState: the same on every machine)."""
  shapes = param_shapes(config)
  state = np.random.RandomState(0)

  def draw(path, leaf):
    name = jax.tree_util.keystr(path[-1:])
    values = state.standard_normal(leaf.shape)
    if 'kernel' in name:
      values = values / math.sqrt(max(1, math.prod(leaf.shape[:-1])))
    elif 'scale' in name:
      values = 1.0 + 0.05 * values
    elif 'negative_slope' in name:
      values = 0.25 + 0.05 * values
    elif 'bias' in name:
      values = 0.05 * values
    return values.astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def reference_inputs(channels: int) -> dict[str, np.ndarray]:
  """Fixed audio: vocals and accompaniment `(2, REFERENCE_LENGTH, channels)` (the sampler uses the first mixture)."""
  state = np.random.RandomState(1)
  t = np.arange(REFERENCE_LENGTH) / 22050.0
  vocals = 0.2 * np.sin(2 * np.pi * 330.0 * t)[None, :, None] * np.ones((2, 1, channels))
  accompaniment = 0.1 * state.standard_normal((2, REFERENCE_LENGTH, channels))
  return {'vocals': vocals.astype(np.float32), 'mixture': (vocals + accompaniment).astype(np.float32)}


def correctness_outputs(plan: Plan, dtype: str) -> dict[str, np.ndarray]:
  """The sampler output, train-step metrics and (strided) gradient of the plan's correctness model."""
  config = load_config('cpu_tiny', [*plan.reference_overrides, f'model.dtype={dtype!r}', 'train.batch_size=2',
                                    f'data.segment={REFERENCE_LENGTH}'])
  model = build_model(config)
  params = jax.tree.map(jnp.asarray, reference_params(config))
  batch = {key: jnp.asarray(value) for key, value in reference_inputs(config.data.channels).items()}
  settings = sampler.SamplerSettings.from_config(config, steps=REFERENCE_STEPS, eta=ETA, cutoff_hz=CUTOFF_HZ,
                                                 sigma_start=1.0, num_samples=1, start='noise')
  vocals = sampler.compiled_sampler(sampler.model_network(model), settings)(
      params, batch['mixture'][:1], jax.random.key(0))
  rng = jax.random.key(1)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, ema_params=params,
                     opt_state=optimizer_lib.make_optimizer(config).init(params))
  train_step, loss_fn = step_lib.make_train_step(model, config), step_lib.make_loss_fn(model, config)

  def step_and_gradient(state, batch, rng):  # one compilation: XLA shares the two identical backward passes.
    grads, _ = jax.grad(loss_fn, has_aux=True)(state.params, batch, jax.random.fold_in(rng, state.step))
    return train_step(state, batch, rng)[1], grads

  metrics, grads = jax.jit(step_and_gradient)(state, batch, rng)
  gradient = np.concatenate([np.ravel(g) for g in jax.tree.leaves(jax.device_get(grads))])
  return {'sampler': np.asarray(vocals, np.float32)[0],
          'metrics': np.array([float(metrics[name]) for name in METRICS], np.float32),
          'gradient': gradient[::GRADIENT_STRIDE].astype(np.float32)}


def relative_error(value: np.ndarray, reference: np.ndarray) -> float:
  if value.shape != reference.shape:
    raise SystemExit(f'{REFERENCE}: computed for another model ({reference.shape} != {value.shape}); '
                     'rerun with --write-reference on a CPU')
  return float(np.linalg.norm(value - reference) / max(np.linalg.norm(reference), 1e-30))


def check_correctness(report: Report, plan: Plan) -> dict:
  """Each dtype against the committed float32 CPU reference of the plan's correctness model.

  float32 must match every output to `FLOAT32_TOLERANCE`. bfloat16 is held to `BFLOAT16_TOLERANCE` on the
  sampler output and the train step's metrics; its gradient error is reported beside them, not gated: rounding
  every activation to 8 bits moves the per-parameter gradients of a deep random network far more than the loss
  and the sampler output (docs/benchmarks.md has the figures).
  """
  reference = np.load(REFERENCE)
  section = {'reference': f'{REFERENCE.name}:{plan.reference}',
             'tolerance': {'float32': FLOAT32_TOLERANCE, 'bfloat16': BFLOAT16_TOLERANCE}}
  for dtype, tolerance, gated in (('float32', FLOAT32_TOLERANCE, ('sampler', 'metrics', 'gradient')),
                                  ('bfloat16', BFLOAT16_TOLERANCE, ('sampler', 'metrics'))):
    precision = jax.default_matmul_precision('highest') if dtype == 'float32' else contextlib.nullcontext()
    with precision:
      outputs = correctness_outputs(plan, dtype)
    errors = {name: relative_error(value, reference[f'{plan.reference}__{name}']) for name, value in outputs.items()}
    ok = all(math.isfinite(errors[name]) and errors[name] <= tolerance for name in gated)
    section[dtype] = {'errors': errors, 'gated': list(gated), 'ok': ok}
    report.say(f'correctness {dtype}: ' + ', '.join(f'{k} {v:.2e}' for k, v in errors.items())
               + f' (tolerance {tolerance:.0e} on {", ".join(gated)}): {"ok" if ok else "FAIL"}')
  if jax.default_backend() == 'gpu':  # what float32 at the default (TF32) precision costs in accuracy.
    outputs = correctness_outputs(plan, 'float32')
    section['float32_default_precision'] = {
        name: relative_error(value, reference[f'{plan.reference}__{name}']) for name, value in outputs.items()}
  return section


def write_reference() -> None:
  """Computes the references of both plans on this machine's CPU (float32, precision 'highest')."""
  if jax.default_backend() != 'cpu':
    raise SystemExit('--write-reference: run it on a CPU (the reference is the CPU result)')
  arrays = {'jax_version': np.array(jax.__version__)}
  with jax.default_matmul_precision('highest'):
    for plan in PLANS.values():
      outputs = correctness_outputs(plan, 'float32')
      arrays.update({f'{plan.reference}__{name}': value for name, value in outputs.items()})
  REFERENCE.parent.mkdir(parents=True, exist_ok=True)
  temporary = REFERENCE.with_suffix('.tmp.npz')
  np.savez_compressed(temporary, **arrays)
  temporary.replace(REFERENCE)
  print(f'wrote {REFERENCE} ({REFERENCE.stat().st_size / 1024:.0f} KiB, jax {jax.__version__})')


# --- Sampling ---------------------------------------------------------------------------------------------------


def random_params(config, seed: int = 0):
  """Parameters of the right shapes, N(0, 0.02^2), drawn on the host (speed does not depend on them; XLA would
  compile a program per shape) and placed on the default device."""
  generator = np.random.default_rng(seed)
  return jax.tree.map(lambda leaf: jnp.asarray(0.02 * generator.standard_normal(leaf.shape, np.float32)),
                      param_shapes(config))


def excerpt_chunks(config, seconds: float) -> np.ndarray:
  """A stereo test 'song' at the model's rate, cut into the config's chunks `(chunks, chunk, channels)`."""
  rate = config.data.sample_rate
  t = np.arange(int(seconds * rate)) / rate
  tones = sum(0.1 * np.sin(2 * np.pi * f * t) for f in (220.0, 440.0, 1320.0))
  song = tones[:, None] + 0.05 * np.random.RandomState(2).standard_normal((len(t), config.data.channels))
  return cut_chunks(song.astype(np.float32), chunk_plan(len(t), config.sampler.chunk, config.sampler.overlap))


def attention_impls(dtype: str) -> tuple[str, ...]:
  """The concrete implementations that apply to this backend and dtype (cuDNN: half precision on a GPU)."""
  if jax.default_backend() == 'gpu' and dtype != 'float32':
    return ('cudnn', 'xla', 'blockwise')
  return ('xla', 'blockwise')


def time_call(compiled, args, repeats: int) -> tuple[float, list[float]]:
  """(median seconds, all times) of `repeats` calls after one warm-up call."""
  jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times), times


def time_sampler(report: Report, plan: Plan, dtype: str, impl: str, method: str, steps: int, params,
                 chunks: np.ndarray) -> dict:
  """Compiles and times one sampler setting on the whole excerpt."""
  config = load_config(plan.model_config, [*plan.model_overrides, f'model.dtype={dtype!r}',
                                               f'model.attention_impl={impl!r}'])
  settings = sampler.SamplerSettings.from_config(config, steps=steps, method=method, eta=ETA, cutoff_hz=CUTOFF_HZ,
                                                 sigma_start=1.0, num_samples=1, start='noise')
  run = sampler.compiled_sampler(sampler.model_network(build_model(config)), settings)
  args = (params, jnp.asarray(chunks), jax.random.key(0))
  row = {'dtype': dtype, 'attention': impl, 'method': method, 'steps': steps, 'evaluations': settings.evaluations,
         'chunks': len(chunks)}
  try:
    start = time.perf_counter()
    compiled = run.lower(*args).compile()
    row['compile_s'] = time.perf_counter() - start
    row['seconds'], row['times'] = time_call(compiled, args, plan.repeats)
  except Exception as error:  # noqa: BLE001 (an implementation that does not apply here is a result, recorded)
    row['error'] = f'{type(error).__name__}: {str(error).splitlines()[0][:300]}'
    report.say(f'sampling {dtype} {impl} {method} T={steps}: {row["error"]}')
    return row
  row['rtf'] = row['seconds'] / plan.excerpt_seconds
  report.say(f'sampling {dtype:>8} {impl:>9} {method:>8} T={steps:<3}: {row["seconds"]:.3f} s for '
             f'{plan.excerpt_seconds:g} s '
             f'(RTF {row["rtf"]:.4f}, compile {row["compile_s"]:.1f} s)')
  return row


def check_sampling(report: Report, plan: Plan) -> list[dict]:
  """The paper's protocol for every dtype x attention implementation, then T = 20 and the few-step setting."""
  config = load_config(plan.model_config, plan.model_overrides)
  params, chunks = random_params(config), excerpt_chunks(config, plan.excerpt_seconds)
  report.say(f'sampling: {plan.model_config}, {len(chunks)} chunks of {config.sampler.chunk} samples')
  dtypes = plan.timing_dtypes
  cases = [(dtype, 'auto', 'ddim', steps) for steps in plan.sampling_steps for dtype in dtypes]
  cases += [(dtype, 'auto', *plan.few_step) for dtype in dtypes]
  if plan.every_attention:  # most important first: a budget cut drops the forced implementations.
    cases += [(dtype, impl, 'ddim', plan.sampling_steps[0]) for dtype in dtypes for impl in attention_impls(dtype)]
  rows = []
  for case in cases:
    if report.has_time(f'sampling {case}', 30.0):
      rows.append(time_sampler(report, plan, *case, params, chunks))
      report.results['sections']['sampling'] = rows
      report.save()
  return rows


# --- Training ---------------------------------------------------------------------------------------------------


def cost_flops(compiled) -> float | None:
  """XLA's FLOP count of a compiled computation (a dict, or a list of one dict in older jax)."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  return float(analysis['flops']) if analysis and 'flops' in analysis else None


def compiled_bytes(compiled) -> int | None:
  """Arguments + outputs + temporaries of a compiled computation, or None where the backend does not say."""
  analysis = compiled.memory_analysis()
  if analysis is None:
    return None
  return int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes)


def device_memory_limit() -> int | None:
  stats = jax.devices()[0].memory_stats()
  return int(stats['bytes_limit']) if stats and 'bytes_limit' in stats else None


def compile_train_step(plan: Plan, dtype: str, batch: int, saver: tuple[str, ...] = ()):
  """(compiled step, state, batches, rng, config) of the plan's model at `batch` examples, with the memory saver's
  overrides (`Plan.memory_savers`)."""
  config = load_config(plan.model_config, [*plan.model_overrides, f'model.dtype={dtype!r}',
                                           f'train.batch_size={batch}', *plan.train_overrides, *saver])
  model, mesh = build_model(config), parallel.make_mesh()
  parallel.check_batch_size(config, mesh)
  params = random_params(config)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  state = jax.device_put(TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                    ema_params=jax.tree.map(jnp.copy, params),  # the step donates both
                                    opt_state=optimizer_lib.make_optimizer(config).init(params)), replicated)
  shape = (batch, config.data.segment, config.data.channels)
  generator = np.random.default_rng(0)
  host_batch = {key: 0.1 * generator.standard_normal(shape, np.float32) for key in ('vocals', 'mixture')}
  batches = parallel.stack_and_shard([host_batch] * config.train.steps_per_dispatch, mesh)
  rng = jax.random.key(0)
  compiled = parallel.make_parallel_train_step(model, config, mesh).lower(state, batches, rng).compile()
  return compiled, state, batches, rng, config


def time_training(report: Report, plan: Plan, dtype: str, try_savers: bool) -> dict:
  """Compiles the step at the plan's batch; where it does not fit the device (or `try_savers`), compiles each of the
  plan's memory savers (remat, gradient accumulation) at that batch too; times the first setting that fits, or the
  plain step at the batch halved until it fits."""
  limit, batch = device_memory_limit(), plan.train_batch
  row = {'dtype': dtype, 'requested_batch': batch, 'device_memory_limit': limit, 'memory_saver': 'none'}
  start = time.perf_counter()
  compiled, state, batches, rng, config = compile_train_step(plan, dtype, batch)
  needed = compiled_bytes(compiled)
  row['compiled_bytes_at_requested_batch'] = needed

  def fits(size: int | None) -> bool:
    return not (limit and size and size > 0.9 * limit)

  if try_savers or not fits(needed):
    row['memory_savers'] = {}
    for name, saver in plan.memory_savers:
      if not report.has_time(f'training {dtype} with {name}', 60.0):
        break
      try:
        candidate = compile_train_step(plan, dtype, batch, saver)
      except ConfigError as error:  # an accumulation that does not divide the per-device batch
        report.say(f'training {dtype} with {name}: not compiled: {error}')
        continue
      row['memory_savers'][name] = candidate_bytes = compiled_bytes(candidate[0])
      report.say(f'training {dtype} with {name}: {(candidate_bytes or 0) / 2**30:.2f} GiB compiled at batch {batch}')
      if not fits(needed) and fits(candidate_bytes):
        (compiled, state, batches, rng, config), needed, row['memory_saver'] = candidate, candidate_bytes, name
  while not fits(needed) and batch > jax.device_count():
    batch = max(jax.device_count(), 2 ** int(math.log2(batch * 0.9 * limit / needed)))
    report.say(f'training {dtype}: {needed / 2**30:.1f} GiB compiled does not fit {limit / 2**30:.1f} GiB; '
               f'trying batch {batch}')
    compiled, state, batches, rng, config = compile_train_step(plan, dtype, batch)
    needed = compiled_bytes(compiled)
  row.update(batch=batch, segment=config.data.segment, compile_s=time.perf_counter() - start,
             compiled_bytes=needed, flops_per_step=cost_flops(compiled))
  state, metrics = compiled(state, batches, rng)  # warm-up
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(plan.train_steps):
    state, metrics = compiled(state, batches, rng)
  loss = float(jax.device_get(metrics['loss'])[-1])
  seconds = (time.perf_counter() - start) / plan.train_steps
  stats = jax.devices()[0].memory_stats() or {}
  row.update(seconds_per_step=seconds, steps_per_s=1.0 / seconds, examples_per_s=batch / seconds, loss=loss,
             peak_bytes_in_use=stats.get('peak_bytes_in_use'))
  if row['flops_per_step']:
    row['tflops_per_s'] = row['flops_per_step'] / seconds / 1e12
    row['mfu'] = row['tflops_per_s'] / (PEAK_TFLOPS * jax.device_count())
  report.say(f'training {dtype}: batch {batch}, {row["steps_per_s"]:.2f} steps/s, {row["examples_per_s"]:.1f} '
             f'examples/s, MFU {row.get("mfu", float("nan")):.3f}, compile {row["compile_s"]:.0f} s')
  return row


def check_training(report: Report, plan: Plan) -> list[dict]:
  rows = []
  for dtype in sorted(plan.timing_dtypes):  # bfloat16 first: the setting accelerators train in.
    if report.has_time(f'training {dtype}', 90.0):
      rows.append(time_training(report, plan, dtype, try_savers=not rows))  # the savers' memory once
      report.results['sections']['training'] = rows
      report.save()
  return rows


# --- Training on the minutes left -------------------------------------------------------------------------------


def train_for(report: Report, minutes: float, config_name: str, data_dir: pathlib.Path,
              overrides: list[str]) -> dict:
  """Trains `config_name` for `minutes` (then SIGTERM: the loop saves a checkpoint) and exports the EMA weights."""
  from diffvox_jax.train import loop

  if not data_dir.is_dir():
    raise SystemExit(f'--train-data {data_dir}: no such folder')
  config = load_config(config_name, [f'data.data_dir={str(data_dir)!r}', *overrides])
  workdir = report.out / 'train_workdir'
  timer = threading.Timer(minutes * 60.0, os.kill, (os.getpid(), signal.SIGTERM))
  timer.start()
  start = time.perf_counter()
  try:
    loop.train_and_evaluate(config, workdir)
    stopped = 'finished'
  except loop.TrainingInterrupted as interrupted:
    stopped = str(interrupted)
  finally:
    timer.cancel()
  step = inference.export_for_inference(workdir, report.out / 'model')
  result = {'config': config_name, 'overrides': overrides, 'minutes': minutes, 'step': step, 'stopped': stopped,
            'wall_s': time.perf_counter() - start, 'export': 'model/'}
  report.say(f'trained {config_name} to step {step} in {result["wall_s"]:.0f} s ({stopped}); EMA weights in '
             f'{report.out / "model"}')
  return result


# --- Main -------------------------------------------------------------------------------------------------------


def summary_line(results: dict) -> str:
  sections = results['sections']
  correct = sections.get('correctness', {})
  status = {d: ('ok' if correct[d]['ok'] else 'FAIL') if d in correct else 'nan' for d in ('float32', 'bfloat16')}

  def seconds(dtype: str) -> float:
    rows = [r for r in sections.get('sampling', []) if r['dtype'] == dtype and r['attention'] == 'auto'
            and r['method'] == 'ddim' and 'seconds' in r]
    return min((r['seconds'] for r in rows if r['steps'] == max(x['steps'] for x in rows)), default=float('nan'))

  training = sections.get('training', [])  # bfloat16 first where the plan times it.
  examples = training[0]['examples_per_s'] if training else float('nan')
  mfu = training[0].get('mfu', float('nan')) if training else float('nan')
  return (f'correct_float32={status["float32"]} correct_bfloat16={status["bfloat16"]} '
          f't50_s={seconds("float32"):.4f} t50_bf16_s={seconds("bfloat16"):.4f} '
          f'train_examples_per_s={examples:.2f} mfu={mfu:.4f}')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--out', type=pathlib.Path, default=pathlib.Path(os.environ.get('OUT', 'device_check_out')))
  parser.add_argument('--dry-run', action='store_true', help='cpu_tiny sizes on any backend (a CPU test run).')
  parser.add_argument('--budget-s', type=float, default=420.0, help='seconds for sections 1-4 (default 420).')
  parser.add_argument('--sections', default='correctness,sampling,training',
                      help='comma-separated subset of correctness,sampling,training.')
  parser.add_argument('--train-minutes', type=float, default=0.0, help='then train for this many minutes.')
  parser.add_argument('--train-config', default='mir1k_mask', help='config trained by --train-minutes.')
  parser.add_argument('--train-data', type=pathlib.Path, default=pathlib.Path('device_data'),
                      help='prepared data folder (data.data_dir) for --train-minutes.')
  parser.add_argument('--train-override', action='append', default=[], metavar='FIELD=VALUE',
                      help='config override for --train-minutes (repeatable).')
  parser.add_argument('--write-reference', action='store_true', help=f'recompute {REFERENCE.name} and exit.')
  args = parser.parse_args()
  if args.write_reference:
    write_reference()
    return
  sections = set(filter(None, args.sections.split(',')))
  unknown = sections - {'correctness', 'sampling', 'training'}
  if unknown:
    raise SystemExit(f'--sections: unknown {", ".join(sorted(unknown))}')
  plan = PLANS['dry_run' if args.dry_run else 'device']
  report = Report(args.out, args.budget_s)
  report.results.update(mode='dry_run' if args.dry_run else 'device', plan=dataclasses.asdict(plan),
                        command=' '.join(sys.argv), date=time.strftime('%Y-%m-%d %H:%M:%S %Z'))
  try:
    report.results['environment'] = environment()
    report.say(json.dumps(report.results['environment']))
    if 'correctness' in sections:
      report.results['sections']['correctness'] = check_correctness(report, plan)
      report.save()
    if 'sampling' in sections:
      check_sampling(report, plan)
    if 'training' in sections:
      check_training(report, plan)
    if args.train_minutes > 0:
      report.results['sections']['train'] = train_for(report, args.train_minutes, args.train_config,
                                                      args.train_data, args.train_override)
    report.say(summary_line(report.results))
  finally:
    report.close()


if __name__ == '__main__':
  main()
