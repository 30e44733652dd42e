"""The speed/quality frontier of the samplers: median uSDR on MIR-1K dev against generator evaluations (NFE).

    python tools/bench_frontier.py --checkpoint diffdmx_refiner_16k --out frontier.json --png frontier.png
    python tools/bench_frontier.py --quick        # every 8th dev clip (10 clips, both singers), NFE 1 to 20

For each solver (`--methods`), start (`--inits`: 'noise', the paper's, from sigma = 1; 'direct', the conditioner's
own estimate noised to `--sigma-start`), eta (`--etas`; 0 is the ODE solver) and NFE (`--nfe`), the checkpoint's
config is run with `sampler.num_samples = 1` (so NFE is the whole cost per chunk) and the most steps whose
evaluations fit in the NFE (Heun spends two per inner step; a setting that cannot spend exactly the NFE is run at
the largest it can and reported at its own count). The refinement noise keeps the checkpoint's `cutoff_hz`.
Clips: every `--every`-th MIR-1K dev clip (sorted, so both singers appear); `--quick` = every 8th and NFE up to 20.
`--reference-above 10` runs the NFEs above 10 for the reference (DDIM from noise) only, so the other lines of the
figure stop at 10 and the full 78-clip grid takes about a third of the time; every key of the last line stays exact
(nfe_to_match_ddim50 whenever some setting within 10 evaluations matches).

Prints one row per (method, init, eta) with the uSDR at each NFE and the wall time per clip, writes JSON and a PNG
(uSDR against NFE, one line per row), and ends with the line
`ddim50_usdr=X best10_usdr=X best10_method=NAME best5_usdr=X nfe_to_match_ddim50=N` (ddim50: DDIM from noise at
50 evaluations, its best eta; best10 / best5: the best setting with at most 10 / 5 evaluations, named
method/init/eta; nfe_to_match: the fewest evaluations of any setting within 0.1 dB of ddim50).
"""

import argparse
import json
import pathlib
import sys
import time

import numpy as np

from diffvox_jax import evaluate, inference, metrics, sampler

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench_quality  # noqa: E402 (a sibling script)

NFES = (1, 2, 4, 6, 10, 20, 50)
QUICK_NFES = (1, 2, 4, 6, 10, 20)
QUICK_EVERY = 8
MATCH_DB = 0.1


def steps_for(method: str, nfe: int, sigma_start: float) -> int:
  """The most steps whose generator evaluations (`SamplerSettings.evaluations`) are at most `nfe` (at least 1)."""
  start = 'noise' if sigma_start >= 1.0 else 'direct'
  steps = 1
  while sampler.SamplerSettings(steps=steps + 1, method=method, sigma_start=sigma_start,
                                start=start).evaluations <= nfe:
    steps += 1
  return steps


def budgets(method: str, init: str, nfes: list[int], reference_above: int) -> list[int]:
  """The NFEs a setting runs: all of `nfes`, or with `reference_above` > 0 those up to it unless the setting is
  the reference (DDIM from noise)."""
  reference = method == 'ddim' and init == 'noise'
  return [nfe for nfe in nfes if reference or not reference_above or nfe <= reference_above]


def setting_name(method: str, init: str, eta: float) -> str:
  return f'{method}/{init}/eta{eta:g}'


def summarize(points: list[dict]) -> dict:
  """The key figures from points `{'method', 'init', 'eta', 'nfe', 'usdr'}` (see the module docstring)."""
  ddim50 = max((p['usdr'] for p in points if p['method'] == 'ddim' and p['init'] == 'noise' and p['nfe'] == 50),
               default=float('nan'))

  def best(limit):
    within = [p for p in points if p['nfe'] <= limit]
    return max(within, key=lambda p: p['usdr']) if within else None

  best10, best5 = best(10), best(5)
  matching = [p['nfe'] for p in points if p['usdr'] >= ddim50 - MATCH_DB]
  return {'ddim50_usdr': ddim50, 'best10_usdr': best10['usdr'] if best10 else float('nan'),
          'best10_method': setting_name(best10['method'], best10['init'], best10['eta']) if best10 else 'none',
          'best5_usdr': best5['usdr'] if best5 else float('nan'),
          'nfe_to_match_ddim50': min(matching) if matching else -1}


def plot(points: list[dict], path: pathlib.Path, title: str) -> None:
  """uSDR against NFE (log axis), one line per method/init/eta: colour = method, dashed = init direct, square
  markers = eta > 0."""
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  figure, axes = plt.subplots(figsize=(7, 4.5))
  methods = sorted({p['method'] for p in points})
  for method, init, eta in sorted({(p['method'], p['init'], p['eta']) for p in points}):
    line = sorted((p['nfe'], p['usdr']) for p in points if (p['method'], p['init'], p['eta']) == (method, init, eta))
    axes.plot(*zip(*line, strict=True), color=f'C{methods.index(method)}', linestyle='-' if init == 'noise' else '--',
              marker='o' if eta == 0 else 's', label=setting_name(method, init, eta))
  axes.set_xscale('log')
  axes.set_xlabel('generator evaluations per chunk (NFE)')
  axes.set_ylabel('median uSDR (dB)')
  axes.set_title(title)
  axes.grid(alpha=0.3)
  axes.legend(fontsize=7)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--checkpoint', default=bench_quality.MODEL, help='model: packaged name, folder or workdir')
  parser.add_argument('--data', default=str(bench_quality.DATA), help='the shared data folder')
  parser.add_argument('--every', type=int, default=1, help='use every N-th MIR-1K dev clip (1 = all 78)')
  parser.add_argument('--quick', action='store_true', help=f'every {QUICK_EVERY}th clip, NFE up to 20')
  parser.add_argument('--methods', default=','.join(sampler.METHODS))
  parser.add_argument('--inits', default='noise,direct')
  parser.add_argument('--etas', default='0,0.4', help='refinement noise levels (0 = the ODE solver)')
  parser.add_argument('--nfe', default=None, help=f'evaluation budgets (default {",".join(map(str, NFES))})')
  parser.add_argument('--sigma-start', type=float, default=0.5, help="where init 'direct' starts")
  parser.add_argument('--schedule', default=None, help="sigma grid for every setting (default: the config's)")
  parser.add_argument('--reference-above', type=int, default=0,
                      help='NFEs above this run only for the reference, DDIM from noise (0 = every setting at every '
                           'NFE; 10 still gives every key of the last line)')
  parser.add_argument('--out', default='frontier.json', help='JSON output path')
  parser.add_argument('--png', default=None, help='figure path (default: beside --out)')
  args = parser.parse_args(argv)
  every = QUICK_EVERY if args.quick else args.every
  nfes = [int(n) for n in args.nfe.split(',')] if args.nfe else list(QUICK_NFES if args.quick else NFES)
  checkpoint = inference.resolve_checkpoint(args.checkpoint)
  base_config, params = inference.load_for_inference(checkpoint)
  tracks = bench_quality.mir1k_dev(pathlib.Path(args.data), every)
  start = time.perf_counter()
  points = []
  for method in args.methods.split(','):
    for init in args.inits.split(','):
      sigma_start = 1.0 if init == 'noise' else args.sigma_start
      for eta in (float(e) for e in args.etas.split(',')):
        row = []
        for nfe in budgets(method, init, nfes, args.reference_above):
          config = base_config.copy_and_resolve_references()
          steps = steps_for(method, nfe, sigma_start)
          config.sampler.update(method=method, start=init, sigma_start=sigma_start, eta=eta, steps=steps,
                                num_samples=1)
          if args.schedule:
            config.sampler.schedule = args.schedule
          settings = sampler.SamplerSettings.from_config(config)
          system = evaluate.model_system(config, params, pathlib.Path('unused'), runs=1)
          began = time.perf_counter()
          scores = [metrics.usdr(t.vocals, system.estimate(t, 0)) for t in tracks]
          seconds = (time.perf_counter() - began) / len(tracks)
          point = {'method': method, 'init': init, 'eta': eta, 'steps': steps, 'nfe': settings.evaluations,
                   'usdr': float(np.median(scores)), 'mean_usdr': float(np.mean(scores)),
                   'seconds_per_clip': seconds}
          if point['nfe'] not in [p['nfe'] for p in row]:
            row.append(point)
        points += row
        cells = '  '.join(f'{p["nfe"]:>2d}:{p["usdr"]:6.2f}' for p in row)
        print(f'{setting_name(method, init, eta):24s} {cells}   '
              f'{row[-1]["seconds_per_clip"]:.2f} s/clip at NFE {row[-1]["nfe"]}', flush=True)
  summary = summarize(points)
  out = pathlib.Path(args.out)
  report = {'checkpoint': str(checkpoint), 'clips': len(tracks), 'every': every, 'sigma_start_direct':
            args.sigma_start, 'cutoff_hz': float(base_config.sampler.cutoff_hz),
            'schedule': args.schedule or str(base_config.sampler.schedule), 'points': points, 'summary': summary,
            'seconds': time.perf_counter() - start}
  out.write_text(json.dumps(report, indent=2))
  plot(points, pathlib.Path(args.png) if args.png else out.with_suffix('.png'),
       f'{checkpoint.name}: {len(tracks)} MIR-1K dev clips, one sample per chunk')
  print(' '.join(f'{key}={value:.3f}' if isinstance(value, float) else f'{key}={value}'
                 for key, value in summary.items()))
  return 0


if __name__ == '__main__':
  sys.exit(main())
