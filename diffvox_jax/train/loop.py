"""The training loop: resume, data-parallel steps, logging, validation, checkpoints, preemption and NaN stops.

`train_and_evaluate(config, workdir)` runs (or resumes) a run whose state lives in `workdir` (see
`checkpoint.py`). Exact resume: a restarted run restores params, EMA, optimizer state, step and the input
iterator state from the newest checkpoint, and every step draws its randomness from `fold_in(rng, step)`, so it
sees the same batches and produces the same parameters as an uninterrupted run.
"""

import os
import pathlib
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any, Protocol

import jax
import ml_collections
import numpy as np
import tqdm
from etils import epath
from jax.experimental import multihost_utils
from tensorboardX import SummaryWriter

from diffvox_jax import config as config_lib
from diffvox_jax import files, inference
from diffvox_jax.models import spectral as models_spectral
from diffvox_jax.train import checkpoint as checkpoint_lib
from diffvox_jax.train import parallel, validation
from diffvox_jax.train.state import TrainState, with_conditioner

# SIGHUP too: a dropped `gcloud ... ssh --worker=all` session hangs up every host of a pod at once.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
METRICS_FILE = 'metrics.jsonl'  # every logged scalar, one JSON line per log point (`plots.read_metrics` reads it)


class CheckpointableIterator(Protocol):
  """An iterator of per-host batches `{'mixture', 'vocals', ...}` `(per_host_batch, segment, channels)` whose
  position can be saved and restored (grain's iterators)."""

  def __next__(self) -> dict[str, np.ndarray]: ...

  def get_state(self) -> Any: ...

  def set_state(self, state: Any) -> None: ...


class TrainingDiverged(RuntimeError):
  """A non-finite loss or gradient; the message names the step and the checkpoint that was kept."""


class TrainingInterrupted(RuntimeError):
  """SIGTERM/SIGINT stopped the run after saving a checkpoint at `step`."""

  def __init__(self, signum: int, step: int):
    super().__init__(f'stopped by {signal.Signals(signum).name} at step {step}; checkpoint saved')
    self.signum, self.step = signum, step


class StopSignals:
  """Context manager that turns SIGTERM/SIGINT/SIGHUP into a flag checked between dispatches (first signal wins);
  the previous handlers come back on exit. Outside the main thread no handler can be installed: a no-op."""

  def __init__(self):
    self.received: int | None = None
    self._previous: dict[int, Any] = {}

  def _handle(self, signum, frame):
    del frame
    if self.received is None:
      self.received = signum

  def __enter__(self) -> 'StopSignals':
    try:
      self._previous = {signum: signal.signal(signum, self._handle) for signum in STOP_SIGNALS}
    except ValueError:  # not the main thread of the main interpreter
      self._previous = {}
    return self

  def __exit__(self, *exc_info) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)

  def agreed(self, poll: bool = True) -> int | None:
    """The received signal, agreed over all processes (every host must stop at the same step). With several
    processes the agreement is a global barrier that waits for the dispatched work, so it happens only when `poll`
    (every `train.stop_poll_every` steps); otherwise None."""
    if jax.process_count() == 1:
      return self.received
    if not poll:
      return None
    signals = multihost_utils.process_allgather(np.int32(self.received or 0))
    return int(signals.max()) or None


def check_data_dir(config: ml_collections.ConfigDict) -> None:
  """Raises FileNotFoundError with the fix when `data.data_dir` does not exist."""
  data_dir = pathlib.Path(config.data.data_dir).expanduser()
  if not data_dir.is_dir():
    raise FileNotFoundError(
        f'data directory {data_dir} does not exist: prepare the datasets of data.sources={config.data.sources!r} '
        f'there first (diffvox prepare --dataset NAME --data-dir {data_dir}) or set --config.data.data_dir')


def default_train_data(config: ml_collections.ConfigDict) -> CheckpointableIterator:
  """This process's shard of the training stream (`data.pipeline.train_iterator`)."""
  from diffvox_jax.data import pipeline

  check_data_dir(config)
  return pipeline.train_iterator(config, process_index=jax.process_index(), process_count=jax.process_count())


def default_eval_data(config: ml_collections.ConfigDict) -> list[dict[str, np.ndarray]]:
  """This process's shard of the `train.eval_batches` validation batches (`data.pipeline.eval_batches`)."""
  from diffvox_jax.data import pipeline

  check_data_dir(config)
  return list(pipeline.eval_batches(config, num_batches=config.train.eval_batches,
                                    process_index=jax.process_index(), process_count=jax.process_count()))


def crossed(before: int, after: int, every: int) -> bool:
  """Whether a multiple of `every` lies in (before, after]; never for `every` <= 0."""
  return every > 0 and after // every > before // every


def dispatch_size(step: int, config: ml_collections.ConfigDict) -> int:
  """Optimizer steps in the next dispatch: `train.steps_per_dispatch`, cut short so that checkpoints,
  validation and the end of the run fall on dispatch boundaries."""
  train = config.train
  size = min(train.steps_per_dispatch, train.num_steps - step)
  for every in (train.checkpoint_every, train.eval_every):
    if every > 0:
      size = min(size, every - step % every)
  return size


def write_resolved_config(workdir: epath.Path, config: ml_collections.ConfigDict) -> None:
  """Saves `workdir/config.json` (process 0), warning when it replaces a different config of the same run."""
  if jax.process_index() != 0:
    return
  path = workdir / inference.CONFIG_FILE
  if path.is_file() and path.read_text() != config_lib.to_json(config):
    announce(f'warning: {path} held a different config; with changed settings the resume is not exact')
  inference.save_config(workdir, config)


def announce(message: str) -> None:
  """A status line on stderr from process 0, printed above the progress bar."""
  if jax.process_index() == 0:
    tqdm.tqdm.write(message, file=sys.stderr)


class Reporter:
  """Everything a finished dispatch reports: the NaN check, the progress bar, the scalars (process 0: JSON lines
  in `metrics.jsonl` and TensorBoard).

  Train scalars are means over the steps since the previous log point (`train.log_every`); throughput on the
  bar counts from the end of the first dispatch, so compilation is left out.
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: epath.Path, step: int):
    self.train, self.workdir = config.train, workdir
    is_main = jax.process_index() == 0
    self.writer = SummaryWriter(str(workdir / 'tensorboard')) if is_main else None
    self.metrics_path = workdir / METRICS_FILE if is_main else None
    self.progress = tqdm.tqdm(total=self.train.num_steps, initial=step, unit='step', disable=not is_main,
                              dynamic_ncols=True)
    self.sums: dict[str, float] = {}
    self.window_steps, self.window_time = 0, time.perf_counter()
    self.timed_from: tuple[int, float] | None = None  # (step, time) at the end of the first dispatch

  def start_timing(self, step: int) -> None:
    self.timed_from = (step, time.perf_counter())
    self.sums, self.window_steps, self.window_time = {}, 0, time.perf_counter()

  def steps_per_second(self, step: int) -> float:
    if self.timed_from is None or step <= self.timed_from[0]:
      return 0.0
    return (step - self.timed_from[0]) / max(time.perf_counter() - self.timed_from[1], 1e-9)

  def dispatch(self, first_step: int, metrics: dict[str, np.ndarray], last_saved: int | None) -> None:
    """Reports a finished dispatch: `metrics` are `(steps,)` arrays for steps `first_step + 1 ...`.

    Raises TrainingDiverged naming the first step (1-based update count) whose loss or gradient norm is not
    finite, before anything of it is logged.
    """
    bad = ~(np.isfinite(metrics['loss']) & np.isfinite(metrics['grad_norm']))
    if bad.any():
      index = int(np.argmax(bad))
      kept = (f'the last good checkpoint (step {last_saved}) is kept in {self.workdir / inference.CHECKPOINT_DIR}'
              if last_saved is not None else 'no checkpoint had been saved yet')
      raise TrainingDiverged(
          f'non-finite loss at step {first_step + index + 1} (loss={metrics["loss"][index]}, '
          f'grad_norm={metrics["grad_norm"][index]}); stopping without saving: {kept}')
    steps = len(metrics['loss'])
    done = first_step + steps
    for name, values in metrics.items():
      self.sums[name] = self.sums.get(name, 0.0) + float(np.sum(values))
    self.window_steps += steps
    rate = self.steps_per_second(done)
    self.progress.set_postfix(loss=f'{float(metrics["loss"][-1]):.4f}', steps_per_s=f'{rate:.2f}',
                              examples_per_s=f'{rate * self.train.batch_size:.1f}', refresh=False)
    if crossed(first_step, done, self.train.log_every) or done == self.train.num_steps:
      window_rate = self.window_steps / max(time.perf_counter() - self.window_time, 1e-9)
      scalars = {f'train/{name}': total / self.window_steps for name, total in self.sums.items()}
      scalars.update({'train/steps_per_s': window_rate, 'train/examples_per_s': window_rate * self.train.batch_size})
      self.scalars(scalars, done)
      self.sums, self.window_steps, self.window_time = {}, 0, time.perf_counter()

  def scalars(self, values: dict[str, float], step: int) -> None:
    """Logs `values` at `step` to `metrics.jsonl` (one line `{"step": step, tag: value, ...}`) and as TensorBoard
    scalars (process 0 only)."""
    if self.metrics_path is None:
      return
    files.append_json_line(self.metrics_path, {'step': int(step), **{tag: float(v) for tag, v in values.items()}})
    for tag, value in values.items():
      self.writer.add_scalar(tag, value, step)
    self.writer.flush()

  def close(self) -> None:
    self.progress.close()
    if self.writer is not None:
      self.writer.close()


def evaluate(eval_step, params, batches: Sequence[dict[str, jax.Array]], rng: jax.Array) -> dict[str, float]:
  """Mean validation loss terms over `batches` (each with its own fixed key, so curves are comparable)."""
  totals: dict[str, float] = {}
  for index, batch in enumerate(batches):
    metrics = jax.device_get(eval_step(params, batch, jax.random.fold_in(rng, index)))
    for name, value in metrics.items():
      totals[name] = totals.get(name, 0.0) + float(value) / len(batches)
  return totals


def check_conditioner_units(config: ml_collections.ConfigDict, source_config: ml_collections.ConfigDict,
                            source: str) -> None:
  """Raises ConfigError unless this config's conditioner reads the mixture in the units `source` was trained in."""
  trained = float(source_config.diffusion.get('data_scale', 1.0)) * models_spectral.conditioner_gain(source_config)
  ours = float(config.diffusion.data_scale) * models_spectral.conditioner_gain(config)
  if abs(trained - ours) > 1e-9 * trained:
    raise config_lib.ConfigError(f'model.spectral.conditioner_data_scale={ours:g} but {source} was trained at '
                                 f'{trained:g}')


def initialised_from_source(state: TrainState, config: ml_collections.ConfigDict) -> TrainState:
  """A fresh `state` with its conditioner taken from `model.spectral.conditioner_from` when set (spectral kinds; a
  'mask' model is all conditioner, so it then fine-tunes that model)."""
  source = config.model.spectral.conditioner_from if config.model.kind != 'waveform' else ''
  if not source:
    return state
  source_config, conditioner = inference.pretrained_conditioner(source)
  check_conditioner_units(config, source_config, source)
  announce(f'conditioner initialised from {source}')
  return with_conditioner(state, conditioner, source)


def run_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The run's base keys (initialisation, training, validation), `fold_in(key(seed), 0 / 1 / 2)`.

  Training step `s` draws from `fold_in(training key, s)` (see `step.py`); validation batch `i` from
  `fold_in(validation key, i)` at every evaluation.
  """
  root = jax.random.key(seed)
  return tuple(jax.random.fold_in(root, index) for index in range(3))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *, model=None,
                       train_data: CheckpointableIterator | None = None,
                       eval_data: Sequence[dict[str, np.ndarray]] | None = None,
                       mesh: jax.sharding.Mesh | None = None) -> TrainState:
  """Trains to `train.num_steps`, resuming from the newest checkpoint in `workdir`; returns the final state.

  Args:
    config: the resolved config (saved as `workdir/config.json`).
    workdir: the run folder (config, checkpoints, `metrics.jsonl` and TensorBoard scalars).
    model: the Flax module; default `models.build_model(config)`.
    train_data: this process's checkpointable batch iterator; default `data.pipeline.train_iterator`.
    eval_data: this process's validation batches; default `data.pipeline.eval_batches` (when
      `train.eval_every` and `train.eval_batches` are positive).
    mesh: the device mesh; default every device of every process (`parallel.make_mesh`).

  Raises:
    TrainingDiverged: a non-finite loss; nothing is saved for that state.
    TrainingInterrupted: SIGTERM/SIGINT; a checkpoint of the last completed step was saved first.
    FileNotFoundError: the data directory is missing.
    parallel.StartupFailed: another process failed to open its data (its message).
  """
  workdir = files.as_path(workdir)  # local, or cloud storage (gs://bucket/run)
  train = config.train
  mesh = parallel.make_mesh() if mesh is None else mesh
  parallel.check_batch_size(config, mesh)
  if model is None:
    from diffvox_jax.models import build_model

    model = build_model(config)

  def open_data():
    train_stream = default_train_data(config) if train_data is None else train_data
    validation_batches = eval_data
    if validation_batches is None and train.eval_every > 0 and train.eval_batches > 0:
      validation_batches = default_eval_data(config)
    return train_stream, validation_batches

  train_data, eval_data = parallel.agree_on_start(open_data)  # before any collective: a failed host stops all
  write_resolved_config(workdir, config)

  init_rng, train_rng, eval_rng = run_keys(config.seed)
  manager = checkpoint_lib.make_manager(workdir, keep=train.keep_checkpoints)
  restored = checkpoint_lib.restore_checkpoint(manager, parallel.abstract_sharded_state(model, config, mesh))
  if restored is None:
    state = initialised_from_source(parallel.create_sharded_state(model, config, init_rng, mesh), config)
  else:
    state, iterator_state = restored
    train_data.set_state(iterator_state)
  step = int(jax.device_get(state.step))
  last_saved = manager.latest_step()
  announce(f'{"resuming" if restored else "starting"} at step {step} of {train.num_steps} in {workdir}')

  multi_step = parallel.make_parallel_train_step(model, config, mesh)
  eval_step = parallel.make_parallel_eval_step(model, config, mesh)
  eval_batches = [parallel.shard_batch({k: b[k] for k in ('vocals', 'mixture')}, mesh) for b in eval_data or ()]
  reporter = Reporter(config, workdir, step)
  validator = (validation.ValidationSeparation(model, config, eval_data[0], workdir)
               if eval_data and train.get('eval_audio_clips', 2) > 0 else None)
  pending: tuple[int, dict[str, jax.Array]] | None = None  # the last dispatch, not yet reported

  def report_pending() -> None:
    nonlocal pending
    if pending is not None:
      first_step, metrics = pending
      pending = None
      reporter.dispatch(first_step, jax.device_get(metrics), last_saved)

  def fetch(first_step: int) -> tuple[int, dict[str, jax.Array], Any] | None:
    """The dispatch after `first_step` on the devices: (steps, global batches, iterator state after them)."""
    if first_step >= train.num_steps:
      return None
    size = dispatch_size(first_step, config)
    batches = parallel.stack_and_shard([next(train_data) for _ in range(size)], mesh)
    return size, batches, train_data.get_state()

  train_rng = parallel.replicate(train_rng, mesh)  # on the devices once, not with every dispatch
  prefetch = train.get('prefetch_to_device', True)
  loop_start = time.perf_counter()
  try:
    with StopSignals() as stop_signals:
      ahead = fetch(step)
      while step < train.num_steps:
        size, batches, iterator_state = ahead
        state, metrics = multi_step(state, batches, train_rng)
        if not prefetch:  # the synchronous loop: host work waits for the dispatch (bench_train compares)
          jax.block_until_ready(metrics)
        ahead = fetch(step + size)  # the next batches go to the devices while this dispatch computes
        report_pending()  # the previous dispatch, also while this one computes
        pending, previous, step = (step, metrics), step, step + size
        reporter.progress.update(size)
        if reporter.timed_from is None:  # the first dispatch includes compilation
          report_pending()
          announce(f'first dispatch (compilation included): {time.perf_counter() - loop_start:.1f} s')
          reporter.start_timing(step)
        received = stop_signals.agreed(crossed(previous, step, train.get('stop_poll_every', 1)))
        save_now = crossed(previous, step, train.checkpoint_every) or step == train.num_steps or received
        eval_now = bool(eval_batches) and crossed(previous, step, train.eval_every)
        if save_now or eval_now:
          report_pending()  # never save or evaluate a state whose loss was not checked
        if save_now:
          last_saved = checkpoint_lib.save_checkpoint(manager, state, iterator_state)
        if eval_now:
          for prefix, params in (('eval', state.params), ('eval_ema', state.ema_params)):
            values = evaluate(eval_step, params, eval_batches, eval_rng)
            announce(f'step {step} {prefix}: ' + ' '.join(f'{k}={v:.4f}' for k, v in sorted(values.items())))
            reporter.scalars({f'{prefix}/{name}': value for name, value in values.items()}, step)
          if validator is not None:
            usdr = validator(step, state.ema_params, reporter.writer)
            reporter.scalars({'eval_ema/separation_usdr': usdr}, step)
            announce(f'step {step} eval_ema: separation_usdr={usdr:.2f} dB (best {validator.best:.2f} dB)')
        if received:
          raise TrainingInterrupted(received, step)
      report_pending()
  finally:
    manager.wait_until_finished()
    manager.close()
    reporter.close()
  return state
