"""Separation quality on real recordings: the model's sampler, its direct estimate, a baseline, the bounds.

    python tools/bench_quality.py                  # the shipped diffusion model and the shipped baseline
    python tools/bench_quality.py --checkpoint runs/mir1k_spectral --baseline runs/mir1k_mask --out q.json

Sets (all real audio from `../shared/data`, read by the project's generic loaders):
- `mir1k_dev`: every MIR-1K dev clip (singers Ani, heycat; 16 kHz mono; mixture = vocals + accompaniment);
- `musdb_sample`: the 7 s MUSDB18 excerpt (44.1 kHz stereo; the model's input is resampled and converted, its
  output converted back, so every metric is at the track's own format);
- `acappella_mix`: each vocadito a cappella clip (resampled to 16 kHz) over a MIR-1K dev accompaniment (clip i
  over accompaniment 7 i + 3, looped to length), at vocal-to-accompaniment ratios of `--snrs` dB.

Systems: `sampler` (the checkpoint's config.sampler: what `diffvox separate` does), `direct` (the same checkpoint's
conditioner estimate, `sampler.steps=0`), `baseline` (`--baseline`'s model, its own defaults), `mixture`, and
`oracle_irm`. Per set and system: median and mean uSDR, the share of clips on which uSDR beats the mixture's,
and on `mir1k_dev` the GNSDR (BSS Eval v3 SDR of the whole clip minus that of the mixture, weighted by clip
length: the MIR-1K literature's figure). Prints a table, writes JSON, and ends with the `key=value` line
`dev_usdr direct_usdr baseline_usdr mixture_usdr beats_mixture musdb_sample_usdr seconds` (dev = median over
mir1k_dev; beats_mixture = the sampler's share on mir1k_dev).
"""

import argparse
import json
import pathlib
import sys
import time
from collections.abc import Callable

import numpy as np

from diffvox_jax import audio, baselines, evaluate, inference, metrics
from diffvox_jax.data import layouts, pipeline

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = REPO_ROOT.parent / 'shared' / 'data'
RATE = 16000
BASELINE = 'mask_baseline_16k'  # a packaged model's name, or any model folder or workdir
MODEL = 'diffdmx_spectral_16k'  # the diffusion model under study (the package's default is the baseline)

Estimate = Callable[[pipeline.Track], np.ndarray]


def mir1k_dev(data: pathlib.Path, every: int = 1, split: str = 'dev') -> list[pipeline.Track]:
  """Every `every`-th MIR-1K clip (sorted by name) of `split` ('dev', or 'train': the training singers) at 16 kHz
  mono."""
  sources = [s for s in layouts.mir1k_tracks(data / 'mir1k') if s.metadata['folder'].startswith(f'{split}/')]
  if not sources:
    raise FileNotFoundError(f'{data / "mir1k" / split}: no MIR-1K {split} clips')
  tracks = []
  for source in sources[::every]:
    clip = source.load(RATE, 1)
    tracks.append(pipeline.Track(source.name, clip.vocals + clip.accompaniment, clip.vocals, RATE))
  return tracks


def musdb_sample(data: pathlib.Path) -> list[pipeline.Track]:
  """The MUSDB18 excerpt(s) of `musdb_sample/` at their own rate and channels."""
  tracks = []
  for folder in sorted(p for p in (data / 'musdb_sample').iterdir() if p.is_dir()):
    mixture, rate = audio.read_audio(folder / 'mixture.flac')
    vocals, _ = audio.read_audio(folder / 'vocals.flac')
    tracks.append(pipeline.Track(folder.name, mixture, vocals, rate))
  return tracks


def acappella_mix(data: pathlib.Path, accompaniments: list[pipeline.Track], snrs: list[float]) -> list[pipeline.Track]:
  """Each a cappella clip over a dev accompaniment at each vocal-to-accompaniment ratio (dB), 16 kHz mono."""
  tracks = []
  for index, path in enumerate(sorted((data / 'acappella').glob('*.flac'))):
    vocals = audio.load_audio(path, RATE, 1)
    other = accompaniments[(7 * index + 3) % len(accompaniments)]
    accompaniment = other.mixture - other.vocals
    accompaniment = np.resize(accompaniment, vocals.shape)  # looped to the vocals' length
    for snr in snrs:
      gain = audio.db_to_gain(audio.rms_db(vocals) - audio.rms_db(accompaniment) - snr)
      mixture = vocals + gain * accompaniment
      peak = max(1.0, float(np.max(np.abs(mixture))))
      tracks.append(pipeline.Track(f'{path.stem}@{snr:+g}dB', mixture / peak, vocals / peak, RATE))
  return tracks


def gnsdr(tracks: list[pipeline.Track], estimates: list[np.ndarray]) -> float:
  """Length-weighted mean of NSDR = SDR(estimate) - SDR(mixture), BSS Eval v3 over each whole clip."""

  def sdr(track, estimate):
    return float(metrics.bss_eval(track.vocals[None], np.asarray(estimate)[None], sources_version=True).sdr[0, 0])

  weights = np.array([len(t.vocals) for t in tracks], np.float64)
  nsdr = np.array([sdr(t, e) - sdr(t, t.mixture) for t, e in zip(tracks, estimates, strict=True)])
  return float(np.sum(weights * nsdr) / np.sum(weights))


def model_estimate(path: pathlib.Path, steps: int | None = None) -> Estimate:
  """The model at `path` with its own sampler settings (or `steps` generator evaluations: 0 = direct)."""
  config, params = inference.load_for_inference(path)
  if steps is not None:
    config.sampler.steps = steps
  system = evaluate.model_system(config, params, pathlib.Path('unused'), runs=1)
  return lambda track: system.estimate(track, 0)


def score(tracks: list[pipeline.Track], estimate: Estimate, mixture_scores: list[float] | None,
          with_gnsdr: bool) -> dict:
  """uSDR per clip and its median, mean, share above the mixture's (when given), GNSDR, and the wall time."""
  start = time.perf_counter()
  estimates = [np.asarray(estimate(track), np.float32) for track in tracks]
  seconds = time.perf_counter() - start
  scores = [metrics.usdr(t.vocals, e) for t, e in zip(tracks, estimates, strict=True)]
  result = {'median': float(np.median(scores)), 'mean': float(np.mean(scores)), 'seconds': seconds,
            'per_clip': dict(zip([t.name for t in tracks], scores, strict=True))}
  if mixture_scores is not None:
    result['beats_mixture'] = float(np.mean(np.array(scores) > np.array(mixture_scores)))
  if with_gnsdr:
    result['gnsdr'] = gnsdr(tracks, estimates)
  return result


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--checkpoint', default=MODEL, help='model: packaged name, folder or workdir')
  parser.add_argument('--baseline', default=BASELINE, help='baseline model ("" = none)')
  parser.add_argument('--data', default=str(DATA), help='the shared data folder')
  parser.add_argument('--every', type=int, default=1, help='use every N-th MIR-1K dev clip (1 = all 78)')
  parser.add_argument('--snrs', default='-5,0,5', help='a cappella vocal-to-accompaniment ratios, dB')
  parser.add_argument('--no-gnsdr', action='store_true', help='skip BSS Eval (GNSDR)')
  parser.add_argument('--out', default='bench_quality.json', help='JSON output path')
  args = parser.parse_args(argv)
  start = time.perf_counter()
  data = pathlib.Path(args.data)
  checkpoint = inference.resolve_checkpoint(args.checkpoint)
  dev = mir1k_dev(data, args.every)
  sets = {'mir1k_dev': dev, 'musdb_sample': musdb_sample(data),
          'acappella_mix': acappella_mix(data, mir1k_dev(data), [float(s) for s in args.snrs.split(',')])}
  systems: dict[str, Estimate] = {
      'mixture': lambda track: baselines.mixture_estimate(track.mixture),
      'oracle_irm': lambda track: baselines.oracle_irm(track.mixture, track.vocals),
      'sampler': model_estimate(checkpoint), 'direct': model_estimate(checkpoint, steps=0)}
  if args.baseline:
    systems['baseline'] = model_estimate(inference.resolve_checkpoint(args.baseline))
  table: dict[str, dict[str, dict]] = {}
  for set_name, tracks in sets.items():
    table[set_name] = {}
    mixture_scores = None
    for name, estimate in systems.items():
      result = score(tracks, estimate, mixture_scores, with_gnsdr=set_name == 'mir1k_dev' and not args.no_gnsdr)
      if name == 'mixture':
        mixture_scores = list(result['per_clip'].values())
      table[set_name][name] = result
      print(f'{set_name:14s} {name:11s} median {result["median"]:6.2f}  mean {result["mean"]:6.2f}  '
            f'beats mixture {result.get("beats_mixture", float("nan")):5.2f}  '
            f'GNSDR {result.get("gnsdr", float("nan")):6.2f}  {result["seconds"]:6.1f} s', flush=True)
  seconds = time.perf_counter() - start
  report = {'checkpoint': str(checkpoint), 'baseline': args.baseline, 'clips': {k: len(v) for k, v in sets.items()},
            'sets': table, 'seconds': seconds}
  pathlib.Path(args.out).write_text(json.dumps(report, indent=2))
  nan = {'median': float('nan')}
  summary = {'dev_usdr': table['mir1k_dev']['sampler']['median'],
             'direct_usdr': table['mir1k_dev']['direct']['median'],
             'baseline_usdr': table['mir1k_dev'].get('baseline', nan)['median'],
             'mixture_usdr': table['mir1k_dev']['mixture']['median'],
             'beats_mixture': table['mir1k_dev']['sampler']['beats_mixture'],
             'musdb_sample_usdr': table['musdb_sample']['sampler']['median'], 'seconds': seconds}
  print(' '.join(f'{key}={value:.3f}' if key != 'seconds' else f'{key}={value:.0f}' for key, value in summary.items()))
  return 0


if __name__ == '__main__':
  sys.exit(main())
