"""Sampler and separation speed: seconds per network evaluation, real-time factors, scan vs Python loop,
conditioner once vs every step, and the peak memory of `diffvox separate` on long files.

The excerpt is 12 s of stereo 44.1 kHz audio (the paper's timing protocol: 12 s, T = 50; the paper reports
8.45 s on a 12 GB GPU), resampled to the model's rate and cut into the config's chunks (3 s, 20% overlap: five
chunks), sampled with eta 0.4 and a 5 kHz high-pass (the paper's best setting).

- `s_per_nfe`: one generator evaluation of one chunk (batch 1) after warm-up; `s_cond`: one conditioner pass.
- cpu_tiny: the full sampler is run on the whole excerpt (all chunks in one batch) for T = 20 and 50 and timed
  after compilation (measured RTF = seconds / 12 s), next to the RTF derived from the per-chunk timings.
- Paper RT size (configs/diffdmx_rt.py): on a CPU only one conditioner pass and one generator evaluation are
  timed and the T-step RTF is derived as chunks * (s_cond + T * s_per_nfe) / 12 s; on an accelerator the full
  sampler is also timed. Parameters are random (shapes from `jax.eval_shape`): speed does not depend on them.
- scan_vs_loop: Python loop over a jitted single step / one `lax.scan` sampler (same run, cpu_tiny, T = 20, one
  chunk).
- cond_once_speedup: conditioner every step / conditioner once (cpu_tiny, T = 20, one chunk).
- peak RSS of `diffvox separate` (a subprocess under /usr/bin/time -v) on 1- and 10-minute stereo 44.1 kHz
  files with a cpu_tiny model at `--rss-steps` steps (memory does not depend on the step count).

    .venv/bin/python tools/bench_sampler.py [--out bench_sampler.json] [--skip-rt] [--skip-rss] [--rss-steps 1]

Prints a table and writes JSON; the last line is `rt_s_per_nfe=X rt_rtf_t50=X tiny_rtf_t50=X scan_vs_loop=X
cond_once_speedup=X peak_rss_1min_mb=X peak_rss_10min_mb=X`.
"""

import argparse
import functools
import json
import os
import pathlib
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import soundfile as sf

from diffvox_jax import audio, files, inference, sampler
from diffvox_jax.chunking import chunk_plan, cut_chunks
from diffvox_jax.config import load_config
from diffvox_jax.models import build_model

EXCERPT_SECONDS = 12.0
EXCERPT_RATE = 44100
STEPS = (20, 50)
COMPARE_STEPS = 20
ETA, CUTOFF_HZ = 0.4, 5000.0


def random_params(config, seed: int = 0):
  """Parameters of the config's model with the right shapes (from `eval_shape`, nothing compiled), N(0, 0.02)."""
  chunk = jax.ShapeDtypeStruct((1, config.sampler.chunk, config.data.channels), jnp.float32)
  shapes = jax.eval_shape(build_model(config).init, jax.random.key(0), chunk,
                          jax.ShapeDtypeStruct((1,), jnp.float32), chunk)['params']
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.normal(0.0, 0.02, s.shape).astype(s.dtype), shapes)


def test_signal(seconds: float, rate: int = EXCERPT_RATE, seed: int = 0) -> np.ndarray:
  """A stereo 'song': a few tones plus noise, `(time, 2)` float32 at about -12 dBFS."""
  t = np.arange(int(seconds * rate)) / rate
  tones = sum(0.1 * np.sin(2 * np.pi * f * t + p) for f, p in ((220, 0), (440, 1), (1320, 2)))
  noise = np.random.default_rng(seed).normal(0.0, 0.05, (len(t), 2))
  return (tones[:, None] + noise).astype(np.float32)


def excerpt_chunks(config) -> np.ndarray:
  """The 12 s excerpt at the model's rate and channels, cut into the config's chunks `(n, chunk, channels)`."""
  mixture = audio.convert_channels(audio.resample(test_signal(EXCERPT_SECONDS), EXCERPT_RATE,
                                                  config.data.sample_rate), config.data.channels)
  return cut_chunks(mixture, chunk_plan(len(mixture), config.sampler.chunk, config.sampler.overlap))


def seconds_of(label: str, fn, *args, repeats: int = 1) -> float:
  """Mean wall time of `fn(*args)` over `repeats` calls after compilation; logs to stderr.

  A jitted `fn` is compiled ahead of time (`lower(...).compile()`); anything else gets one warm-up call.
  """
  start = time.perf_counter()
  if hasattr(fn, 'lower'):
    fn = fn.lower(*args).compile()
  else:
    jax.block_until_ready(fn(*args))
  warm_up = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(repeats):
    jax.block_until_ready(fn(*args))
  seconds = (time.perf_counter() - start) / repeats
  print(f'  {label}: {seconds:.3f} s (compilation or warm-up {warm_up:.1f} s)', file=sys.stderr, flush=True)
  return seconds


@functools.lru_cache(maxsize=32)
def _compiled_step(network: sampler.Network, settings: sampler.SamplerSettings, length: int) -> Callable:
  return jax.jit(functools.partial(sampler.solver_step, network, settings, settings.noise_gain(length)))


def sample_with_python_loop(network: sampler.Network, settings: sampler.SamplerSettings, params, mixture: jax.Array,
                            rng: jax.Array, initial: jax.Array | None = None, *, return_samples: bool = False):
  """`sample` with the steps driven by a Python loop over a jitted `solver_step` (one dispatch per step).

  Same arguments and result as `sample`: the reference (tests/test_sampler.py) and the baseline of the `lax.scan`
  version.
  """
  prepared = jax.jit(functools.partial(sampler.prepare, network, settings))(params, mixture, rng, initial)
  step = _compiled_step(network, settings, mixture.shape[1])
  carry = (prepared.x, jnp.zeros_like(prepared.x))
  for index in range(settings.steps):
    coefficients = sampler.StepCoefficients(*(c[index] for c in prepared.coefficients))
    carry = step(params, prepared.features, prepared.keys, carry, jnp.asarray(index), coefficients)
  return sampler.finish(settings, carry[0], return_samples, prepared.offset)


def settings_for(config, steps: int) -> sampler.SamplerSettings:
  return sampler.SamplerSettings.from_config(config, steps=steps, eta=ETA, cutoff_hz=CUTOFF_HZ, sigma_start=1.0)


def per_chunk_timings(config, params, chunks: np.ndarray, repeats: int) -> dict:
  """One conditioner pass and one generator evaluation on one chunk (batch 1), after warm-up."""
  network = inference.network_for_config(config)
  one = jnp.asarray(chunks[:1])
  condition = jax.jit(network.condition)
  denoise = jax.jit(network.denoise)
  features = condition(params, one)
  sigma = jnp.full((1,), 0.5, jnp.float32)
  s_cond = seconds_of('conditioner, 1 chunk', condition, params, one, repeats=repeats)
  s_nfe = seconds_of('generator, 1 chunk', denoise, params, one, sigma, features, repeats=repeats)
  derived = {f'rtf_t{t}_derived': len(chunks) * (s_cond + t * s_nfe) / EXCERPT_SECONDS for t in STEPS}
  return {'s_cond': s_cond, 's_per_nfe': s_nfe, 'chunks': len(chunks), **derived}


def full_sampler_timings(config, params, chunks: np.ndarray) -> dict:
  """The compiled sampler on the whole excerpt (one batch) for each T: seconds and RTF."""
  network = inference.network_for_config(config)
  mixture, rng = jnp.asarray(chunks), jax.random.key(0)
  result = {}
  for steps in STEPS:
    run = sampler.compiled_sampler(network, settings_for(config, steps))
    seconds = seconds_of(f'sampler T={steps}, {len(chunks)} chunks', run, params, mixture, rng)
    result[f'seconds_t{steps}'] = seconds
    result[f'rtf_t{steps}'] = seconds / EXCERPT_SECONDS
  return result


def loop_and_conditioner_ratios(config, params, chunks: np.ndarray) -> dict:
  """Python loop vs lax.scan, and conditioner every step vs once, at T = COMPARE_STEPS on one chunk."""
  network = inference.network_for_config(config)
  settings = settings_for(config, COMPARE_STEPS)
  mixture, rng = jnp.asarray(chunks[:1]), jax.random.key(0)
  scan = seconds_of('lax.scan sampler', sampler.compiled_sampler(network, settings), params, mixture, rng)
  loop = seconds_of('python loop sampler', lambda *a: sample_with_python_loop(network, settings, *a),
                    params, mixture, rng)
  # The conditioner inside every generator call: the mixture itself is what gets carried as "features". Passed
  # through an optimisation barrier together with the step's state, its input depends on the step for XLA, which
  # could otherwise hoist the loop-invariant conditioner out of the scan (and so run it once after all).

  def denoise_with_conditioner(p, x, s, m):
    m, x = jax.lax.optimization_barrier((m, x))
    return network.denoise(p, x, s, network.condition(p, m))

  every_step = sampler.Network(lambda p, m: m, denoise_with_conditioner)
  every = seconds_of('conditioner every step', sampler.compiled_sampler(every_step, settings), params, mixture,
                     rng)
  return {'scan_seconds': scan, 'loop_seconds': loop, 'scan_vs_loop': loop / scan,
          'cond_every_step_seconds': every, 'cond_once_speedup': every / scan}


def peak_rss_of_separate(config, params, minutes_list: tuple[int, ...], steps: int) -> dict:
  """Peak RSS (MB) and wall time of `diffvox separate` on stereo 44.1 kHz files of the given lengths."""
  result = {}
  with tempfile.TemporaryDirectory() as folder:
    folder = pathlib.Path(folder)
    model = folder / 'model'
    files.write_atomically(model / inference.PARAMS_FILE, flax.serialization.msgpack_serialize(params))
    inference.save_config(model, config)
    block = test_signal(60.0)
    for minutes in minutes_list:
      path = folder / f'{minutes}min.wav'
      with sf.SoundFile(path, 'w', EXCERPT_RATE, 2, subtype='PCM_16') as file:
        for _ in range(minutes):
          file.write(block)
      command = ['/usr/bin/time', '-v', sys.executable, '-m', 'diffvox_jax.cli', 'separate', str(path),
                 '--checkpoint', str(model), '--out', str(folder / 'out'), '--steps', str(steps)]
      start = time.perf_counter()
      run = subprocess.run(command, capture_output=True, text=True, check=False)
      seconds = time.perf_counter() - start
      if run.returncode:
        raise RuntimeError(f'diffvox separate failed on {path}:\n{run.stderr[-2000:]}')
      kilobytes = int(re.search(r'Maximum resident set size \(kbytes\): (\d+)', run.stderr)[1])
      result[f'peak_rss_{minutes}min_mb'] = kilobytes / 1024
      result[f'separate_{minutes}min_seconds'] = seconds
      print(f'  diffvox separate, {minutes} min: {kilobytes / 1024:.0f} MB peak RSS, {seconds:.0f} s', file=sys.stderr,
            flush=True)
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', default='bench_sampler.json')
  parser.add_argument('--skip-rt', action='store_true', help='skip the paper-size model')
  parser.add_argument('--skip-rss', action='store_true', help='skip the diffvox separate memory runs')
  parser.add_argument('--rss-steps', type=int, default=1)
  parser.add_argument('--repeats', type=int, default=2, help='timed calls per per-chunk measurement')
  args = parser.parse_args()

  report = {'machine': {'platform': platform.platform(), 'cpus': os.cpu_count(), 'backend': jax.default_backend(),
                        'devices': [str(d) for d in jax.devices()], 'load_average_start': os.getloadavg()},
            'excerpt_seconds': EXCERPT_SECONDS, 'eta': ETA, 'cutoff_hz': CUTOFF_HZ}

  tiny = load_config('cpu_tiny')
  tiny_params, tiny_chunks = jax.device_put(random_params(tiny)), excerpt_chunks(tiny)
  report['cpu_tiny'] = {**per_chunk_timings(tiny, tiny_params, tiny_chunks, args.repeats),
                        **full_sampler_timings(tiny, tiny_params, tiny_chunks),
                        **loop_and_conditioner_ratios(tiny, tiny_params, tiny_chunks)}
  if not args.skip_rss:
    report['separate_memory'] = {'rss_steps': args.rss_steps,
                                 **peak_rss_of_separate(tiny, random_params(tiny), (1, 10), args.rss_steps)}
  if not args.skip_rt:
    rt = load_config('diffdmx_rt')
    rt_params, rt_chunks = jax.device_put(random_params(rt)), excerpt_chunks(rt)
    report['diffdmx_rt'] = per_chunk_timings(rt, rt_params, rt_chunks, repeats=1)
    if jax.default_backend() != 'cpu':
      report['diffdmx_rt'].update(full_sampler_timings(rt, rt_params, rt_chunks))
  report['machine']['load_average_end'] = os.getloadavg()

  print(f'{"part":<12} {"measure":<28} {"value":>12}')
  for part in ('cpu_tiny', 'diffdmx_rt', 'separate_memory'):
    for name, value in report.get(part, {}).items():
      print(f'{part:<12} {name:<28} {value:>12.4g}')
  pathlib.Path(args.out).write_text(json.dumps(report, indent=2))
  print(f'wrote {args.out}')
  rt_part, tiny_part, memory = report.get('diffdmx_rt', {}), report['cpu_tiny'], report.get('separate_memory', {})
  nan = float('nan')
  summary = {
      'rt_s_per_nfe': rt_part.get('s_per_nfe', nan),
      'rt_rtf_t50': rt_part.get('rtf_t50', rt_part.get('rtf_t50_derived', nan)),
      'tiny_rtf_t50': tiny_part['rtf_t50'],
      'scan_vs_loop': tiny_part['scan_vs_loop'],
      'cond_once_speedup': tiny_part['cond_once_speedup'],
      'peak_rss_1min_mb': memory.get('peak_rss_1min_mb', nan),
      'peak_rss_10min_mb': memory.get('peak_rss_10min_mb', nan),
  }
  print(' '.join(f'{name}={value:.4g}' for name, value in summary.items()))


if __name__ == '__main__':
  main()
