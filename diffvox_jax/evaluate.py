"""The evaluation harness: score systems (the model, the baselines) on whole tracks, resumably.

`run_systems` estimates and scores every (system, run, track) not yet on disk; `results.summarize` aggregates.
`evaluate_model` is what `diffvox evaluate` and the experiments run: the model and both baselines on a dataset
split, then `summary.json` / `summary.md`.
"""

import collections
import dataclasses
import functools
import itertools
import multiprocessing
import pathlib
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent import futures
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from diffvox_jax import baselines, files, metrics, results, separate
from diffvox_jax import sampler as sampler_lib
from diffvox_jax.data import pipeline
from diffvox_jax.inference import save_config

Estimate = Callable[[Any, int], np.ndarray]  # (track, run) -> (time, channels) vocal estimate.


class System(NamedTuple):
  """A separator under evaluation.

  Attributes:
    name: short identifier (`model`, `mixture`, `oracle_irm`).
    label: the name shown in tables.
    estimate: `(track, run) -> (time, channels)` vocal estimate, the shape of `track.vocals`.
    runs: evaluations per track (stochastic systems run several times with different seeds).
    results_dir: where its per-track JSON files go.
    settings: JSON-able description stored in every result; results made with other settings are refused.
  """

  name: str
  label: str
  estimate: Estimate
  runs: int
  results_dir: pathlib.Path
  settings: dict


def score_track(track: Any, estimate: np.ndarray, *, museval: bool, window_s: float) -> dict:
  """uSDR of vocals and accompaniment, and (when `museval`) BSS Eval v4 frames in museval's layout.

  Args:
    track: a `Track(name, mixture, vocals, sample_rate)` with `(time, channels)` arrays.
    estimate: `(time, channels)` vocal estimate.
    museval: also run BSS Eval v4 (slow: seconds per track, the model's cost aside).
    window_s: museval frame length and hop in seconds.
  """
  if estimate.shape != track.vocals.shape:
    raise ValueError(f'{track.name}: estimate shape {estimate.shape} differs from the vocals {track.vocals.shape}')
  if not np.all(np.isfinite(estimate)):
    raise ValueError(f'{track.name}: the vocal estimate contains NaN or infinite samples')
  mixture = np.asarray(track.mixture, np.float64)
  vocals = np.asarray(track.vocals, np.float64)
  estimate = np.asarray(estimate, np.float64)
  record = {
      'track': track.name,
      'sample_rate': int(track.sample_rate),
      'duration_s': len(mixture) / track.sample_rate,
      'usdr': {'vocals': metrics.usdr(vocals, estimate),
               'accompaniment': metrics.usdr(mixture - vocals, mixture - estimate)},
  }
  if museval:
    record.update(metrics.vocal_scores(vocals, estimate, mixture, track.sample_rate, window_s))
    record['museval_window_s'] = window_s
  return record


def _reusable(path: pathlib.Path, system: System, museval: bool, window_s: float) -> bool:
  """True when a stored result answers this request (with museval frames of `window_s` when `museval`); a result
  made with other settings is an error."""
  if not path.is_file():
    return False
  record = files.read_json(path)
  if record.get('settings') != system.settings:
    raise ValueError(f'{path}: made with settings {record.get("settings")}, not {system.settings}; '
                     'evaluate into another output folder (or delete it)')
  return not museval or record.get('museval_window_s') == window_s


def _score_and_write(path: pathlib.Path, track: Any, estimate: np.ndarray, museval: bool, window_s: float,
                     details: dict) -> None:
  record = score_track(track, estimate, museval=museval, window_s=window_s)
  record.update(details)
  files.write_json(path, record)


class _Scorer:
  """Scores estimates here, or in `workers` spawned processes while the caller computes the next estimates
  (BSS Eval is CPU-bound; a GPU sampler keeps running meanwhile). At most `2 * workers` wait in the queue."""

  def __init__(self, workers: int):
    self._pool = None
    if workers > 1:
      self._pool = futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context('spawn'))
    self._pending: collections.deque[futures.Future] = collections.deque()
    self._limit = 2 * workers

  def submit(self, *args) -> None:
    if self._pool is None:
      _score_and_write(*args)
      return
    self._pending.append(self._pool.submit(_score_and_write, *args))
    while len(self._pending) > self._limit:
      self._pending.popleft().result()

  def __enter__(self) -> '_Scorer':
    return self

  def __exit__(self, error_type, error, traceback) -> None:
    if self._pool is None:
      return
    try:
      if error is None:
        while self._pending:
          self._pending.popleft().result()
    finally:
      self._pool.shutdown(cancel_futures=True)


def run_systems(systems: Sequence[System], tracks: Iterable[Any], *, museval: bool = True, window_s: float = 1.0,
                workers: int = 1, total: int | None = None, progress: bool = True) -> list[str]:
  """Scores every system on every track (every run), skipping results already on disk.

  Args:
    systems: the separators.
    tracks: `Track(name, mixture, vocals, sample_rate)` items, read once each.
    museval: also compute BSS Eval v4.
    window_s: museval frame length and hop in seconds.
    workers: processes that score (BSS Eval) in parallel with the estimation; 1 scores in this process.
    total: number of tracks, for the progress bar.
    progress: show a tqdm progress bar.
  Returns:
    the track names in order.
  """
  names = []
  bar = tqdm(tracks, total=total, unit='track', disable=not progress, desc='evaluate')
  with _Scorer(workers) as scorer:
    for track in bar:
      if track.name in names:
        raise ValueError(f'track name {track.name!r} appears twice in the dataset')
      names.append(track.name)
      for system in systems:
        for run in range(system.runs):
          path = results.result_path(system.results_dir, run, track.name)
          if _reusable(path, system, museval, window_s):
            continue
          bar.set_postfix_str(f'{system.name} run {run}: {track.name}'[:60])
          start = time.perf_counter()
          estimate = np.asarray(system.estimate(track, run), np.float32)
          details = {'system': system.name, 'run': run, 'settings': system.settings,
                     'estimate_seconds': time.perf_counter() - start}
          scorer.submit(path, track, estimate, museval, window_s, details)
  return names


def baseline_systems(baseline_dir: str | pathlib.Path, sample_rate: int, channels: int) -> list[System]:
  """The mixture as the estimate (lower bound) and the oracle IRM (upper reference), deterministic: one run.

  The tracks' rate and channels are part of their settings: results at another format are refused, not mixed.
  """
  baseline_dir = pathlib.Path(baseline_dir)
  audio_format = {'sample_rate': int(sample_rate), 'channels': int(channels)}
  irm_settings = {'baseline': 'oracle_irm', 'n_fft': baselines.IRM_N_FFT, 'hop': baselines.IRM_HOP,
                  'alpha': baselines.IRM_ALPHA, 'window': 'hann', **audio_format}
  return [
      System('mixture', 'Mixture (lower bound)', lambda track, run: baselines.mixture_estimate(track.mixture), 1,
             baseline_dir / 'mixture', {'baseline': 'mixture', **audio_format}),
      System('oracle_irm', 'IRM oracle', lambda track, run: baselines.oracle_irm(track.mixture, track.vocals), 1,
             baseline_dir / 'oracle_irm', irm_settings),
  ]


def sampling_key(seed: int, run: int, track_name: str) -> jax.Array:
  """The PRNG key of one (run, track): independent across runs and tracks, the same on every resume."""
  key = jax.random.fold_in(jax.random.key(seed), run)
  return jax.random.fold_in(key, zlib.crc32(track_name.encode()))


def model_system(config: ml_collections.ConfigDict, params: Any, results_dir: str | pathlib.Path, *, runs: int,
                 label: str = 'Diff-DMX', checkpoint: str = '') -> System:
  """The diffusion model with `config.sampler` settings, separating whole tracks in overlapping chunks.

  Tracks at another rate than the model are resampled in and back (soxr), so metrics are always computed at the
  track's own rate and channel count. The sampler compiles at the first track that needs it.
  """
  settings = sampler_lib.SamplerSettings.from_config(config)

  @functools.cache
  def separator() -> separate.Separator:
    return separate.Separator.for_model(config, params, settings)

  def estimate(track: Any, run: int) -> np.ndarray:
    return separator().separate_array(track.mixture, track.sample_rate, sampling_key(config.seed, run, track.name))

  description = {'checkpoint': checkpoint, 'seed': int(config.seed), 'sampler': dataclasses.asdict(settings),
                 'chunk': int(config.sampler.chunk), 'overlap': float(config.sampler.overlap)}
  return System('model', label, estimate, runs, pathlib.Path(results_dir), description)


def evaluate_model(config: ml_collections.ConfigDict, params: Any, tracks: Iterable[Any], out_dir: str | pathlib.Path,
                   *, dataset: str, split: str, runs: int, with_baselines: bool = True, museval: bool = True,
                   baseline_dir: str | pathlib.Path | None = None, label: str = 'Diff-DMX', checkpoint: str = '',
                   workers: int = 1, total: int | None = None, progress: bool = True) -> dict:
  """Evaluates the model (and the baselines) and writes `out_dir/{config.json, summary.json, summary.md}`.

  Args:
    config: the resolved config (sampler settings included); saved as `out_dir/config.json`.
    params: the model parameters.
    tracks: `Track` items of the split.
    out_dir: output folder; the model's results go to `out_dir/model/`.
    dataset: dataset name, for the summary.
    split: split name, for the summary.
    runs: model evaluations per track, each with its own seed.
    with_baselines: also score the mixture and the oracle IRM.
    museval: also compute BSS Eval v4 (SDR/SIR/SAR/ISR).
    baseline_dir: where the baselines' results go (default `out_dir`); share it between evaluations of the same
      tracks to score the baselines once.
    label: the model's name in tables.
    checkpoint: the checkpoint path, recorded with every result.
    workers: processes that compute the metrics while the model separates the next tracks.
    total: number of tracks, for the progress bar.
    progress: show a progress bar.
  Returns:
    the summary (also written as JSON and Markdown).
  """
  out_dir = pathlib.Path(out_dir)
  systems = [model_system(config, params, out_dir / 'model', runs=runs, label=label, checkpoint=checkpoint)]
  if with_baselines:
    systems += baseline_systems(out_dir if baseline_dir is None else baseline_dir, config.data.sample_rate,
                                config.data.channels)
  names = run_systems(systems, tracks, museval=museval, window_s=float(config.eval.museval_window_s),
                      workers=workers, total=total, progress=progress)
  if not names:
    raise ValueError(f'no tracks to evaluate in {dataset}/{split}')
  save_config(out_dir, config)
  summary = {'dataset': dataset, 'split': split, 'tracks': names, 'statistics': results.STATISTICS,
             'systems': {system.name: results.summarize(system, names) for system in systems}}
  results.write_summary(out_dir, summary)
  return summary


def evaluate_split(config: ml_collections.ConfigDict, params: Any, out_dir: str | pathlib.Path, *,
                   dataset: str | None = None, split: str | None = None, data_dir: str | None = None,
                   max_tracks: int | None = None, runs: int | None = None, museval: bool | None = None,
                   **options) -> dict:
  """`evaluate_model` on the first `max_tracks` tracks (all when None) of a prepared dataset split.

  `dataset`, `split`, `runs` and `museval` default to the config's `eval` section; `options` are the remaining
  arguments of `evaluate_model` (`with_baselines`, `baseline_dir`, `label`, `checkpoint`, `workers`, `progress`).
  Every program that evaluates a checkpoint on a split (`diffvox evaluate`, the sweeps, the tables) goes through
  here.
  """
  dataset, split = dataset or config.eval.dataset, split or config.eval.split
  tracks = itertools.islice(pipeline.tracks(config, dataset, split, data_dir=data_dir), max_tracks)
  return evaluate_model(config, params, tracks, out_dir, dataset=dataset, split=split,
                        runs=runs or int(config.eval.runs),
                        museval=bool(config.eval.museval) if museval is None else museval, total=max_tracks,
                        **options)


@dataclasses.dataclass(frozen=True)
class Example:
  """A track to listen to on the evaluation page: why it was picked, its model uSDR and its files."""

  label: str  # 'best', 'median' or 'worst' (by the model's uSDR)
  track: str
  usdr: float
  mixture: pathlib.Path
  estimate: pathlib.Path
  vocals: pathlib.Path
  figure: pathlib.Path


def pick_examples(usdr: dict[str, float]) -> list[tuple[str, str]]:
  """`(label, track)` of the best, median and worst track by `usdr` (`{track: dB}`), each track once (the best
  and the worst win over the median when there are fewer than three tracks)."""
  ranked = sorted(usdr, key=lambda name: -usdr[name])
  picks = {ranked[0]: 'best'}
  picks.setdefault(ranked[-1], 'worst')
  picks.setdefault(ranked[len(ranked) // 2], 'median')
  order = ('best', 'median', 'worst')
  return sorted(((label, name) for name, label in picks.items()), key=lambda pick: order.index(pick[0]))


def listening_examples(config: ml_collections.ConfigDict, params: Any, summary: dict, out_dir: str | pathlib.Path,
                       *, data_dir: str | None = None) -> list[Example]:
  """Separates the best, median and worst track of an evaluation again (run 0's key, so the estimate is the one
  scored) and writes `out_dir/listen/<track>/{mixture,estimate,vocals}.wav` and the spectrograms beside them (float
  wav: the samples as scored)."""
  from diffvox_jax import audio, plots  # matplotlib and the writers only when a page is asked for

  usdr = {name: values['usdr'] for name, values in results.per_track(summary['systems']['model'],
                                                                      summary['tracks']).items()}
  picks = dict((name, label) for label, name in pick_examples(usdr))
  system = model_system(config, params, pathlib.Path(out_dir) / 'model', runs=1)
  examples = []
  for track in pipeline.tracks(config, summary['dataset'], summary['split'], data_dir=data_dir):
    if track.name not in picks:
      continue
    folder = pathlib.Path(out_dir) / 'listen' / results.track_filename(track.name)
    folder.mkdir(parents=True, exist_ok=True)
    estimate = system.estimate(track, 0)
    paths = {'mixture': track.mixture, 'estimate': estimate, 'vocals': track.vocals}
    for name, signal in paths.items():
      audio.write_audio(folder / f'{name}.wav', signal, track.sample_rate, bits='32f')  # as scored: no clipping
    figure = plots.plot_spectrograms([('mixture', track.mixture), ('estimated vocals', estimate),
                                      ('true vocals', track.vocals)], track.sample_rate, folder / 'spectrograms.png',
                                     title=f'{track.name}: {summary["systems"]["model"]["label"]}')
    examples.append(Example(picks[track.name], track.name, usdr[track.name], folder / 'mixture.wav',
                            folder / 'estimate.wav', folder / 'vocals.wav', figure))
    if len(examples) == len(picks):
      break
  order = ['best', 'median', 'worst']
  return sorted(examples, key=lambda example: order.index(example.label))
