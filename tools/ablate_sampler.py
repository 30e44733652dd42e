"""Sampler ablation on MIR-1K dev (or the training singers): one checkpoint, several sampler settings, the same
clips for all.

    python tools/ablate_sampler.py --checkpoint runs/mir1k_spectral --every 4 \\
        --point direct:steps=0 --point default: --point noise:start=noise,sigma_start=1.0 --out ablation.json

Each `--point NAME:field=value,...` overrides `config.sampler` fields of the checkpoint's config (an empty list is
the checkpoint's own settings). Clips are every `--every`-th MIR-1K dev clip (sorted by name, so both singers
appear), or with `--split train` of the training singers' clips (what the model fits, to tell under-fitting from
over-fitting). Prints one row per point (median and mean uSDR, share above the mixture, seconds), writes JSON, and
ends with `best=NAME best_usdr=X direct_usdr=X` (direct_usdr: the point named `direct`, if any). `--checkpoint` takes a
packaged model's name too.
"""

import argparse
import ast
import json
import pathlib
import sys
import time

import numpy as np

from diffvox_jax import config as config_lib
from diffvox_jax import evaluate, inference

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench_quality  # noqa: E402 (a sibling script)


def parse_point(text: str) -> tuple[str, dict]:
  """'name:a=1,b=x' -> ('name', {'a': 1, 'b': 'x'})."""
  name, _, fields = text.partition(':')
  overrides = {}
  for item in filter(None, fields.split(',')):
    key, sep, raw = item.partition('=')
    if not sep:
      raise SystemExit(f'--point {text!r}: {item!r} is not field=value')
    try:
      overrides[key] = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      overrides[key] = raw
  return name, overrides


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--checkpoint', required=True)
  parser.add_argument('--data', default=str(bench_quality.DATA))
  parser.add_argument('--every', type=int, default=4)
  parser.add_argument('--split', choices=('dev', 'train'), default='dev',
                      help="MIR-1K clips to score: 'dev' (unseen singers) or 'train' (the training singers)")
  parser.add_argument('--point', action='append', required=True, help='NAME:field=value,... (repeatable)')
  parser.add_argument('--raw', action='store_true', help='a workdir\'s raw parameters instead of the EMA ones')
  parser.add_argument('--out', default='ablation.json')
  args = parser.parse_args(argv)
  tracks = bench_quality.mir1k_dev(pathlib.Path(args.data), args.every, args.split)
  mixture_scores = [bench_quality.metrics.usdr(t.vocals, t.mixture) for t in tracks]
  base_config, params = inference.load_for_inference(inference.resolve_checkpoint(args.checkpoint),
                                                            use_ema=not args.raw)
  fields = config_lib.load_config('base').sampler  # every sampler field, with its type (older configs lack some).
  rows = {}
  for name, overrides in map(parse_point, args.point):
    config = base_config.copy_and_resolve_references()
    for key, value in overrides.items():
      if key not in fields:
        raise SystemExit(f'--point {name}: sampler has no field {key!r}')
      config.sampler[key] = type(fields[key])(value)
    system = evaluate.model_system(config, params, pathlib.Path('unused'), runs=1)
    start = time.perf_counter()
    result = bench_quality.score(tracks, lambda track, system=system: system.estimate(track, 0), mixture_scores, False)
    result['overrides'], result['seconds'] = overrides, time.perf_counter() - start
    rows[name] = result
    print(f'{name:24s} median {result["median"]:6.2f}  mean {result["mean"]:6.2f}  beats mixture '
          f'{result["beats_mixture"]:4.2f}  {result["seconds"]:6.1f} s  {overrides}', flush=True)
  pathlib.Path(args.out).write_text(json.dumps({'checkpoint': args.checkpoint, 'split': args.split,
                                                'clips': len(tracks), 'points': rows}, indent=2))
  best = max(rows, key=lambda name: rows[name]['median'])
  direct = rows.get('direct', {'median': float('nan')})['median']
  spread = float(np.ptp([row['median'] for row in rows.values()]))
  print(f'best={best} best_usdr={rows[best]["median"]:.3f} direct_usdr={direct:.3f} '
        f'gain_over_direct={rows[best]["median"] - direct:.3f} spread={spread:.3f} clips={len(tracks)}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
