"""Flag groups shared by the `diffvox` commands and the experiment scripts, each defined once.

`define_sampler_flags` (the sampler settings, each defaulting to the checkpoint's config) and
`define_evaluation_flags` (where to evaluate and how) are called by every program that takes them;
`sampler_overrides()` reads the former back as `config.sampler` fields for `config.with_sampler_overrides`.
"""

from typing import Any

from absl import flags

from diffvox_jax import sampler, schedules

# The sampler flags: (flag, config.sampler field). Each defaults to the checkpoint's config when not given.
SAMPLER_FLAGS = (('steps', 'steps'), ('method', 'method'), ('schedule', 'schedule'), ('eta', 'eta'),
                 ('cutoff-hz', 'cutoff_hz'), ('samples', 'num_samples'), ('sigma-start', 'sigma_start'),
                 ('start', 'start'))

FLAGS = flags.FLAGS


def define_sampler_flags() -> None:
  """The sampler flags of `SAMPLER_FLAGS` (`diffvox separate`, `diffvox evaluate`, the experiments)."""
  flags.DEFINE_integer('steps', None, "sampling steps T (default: the config's sampler.steps); 0 = the model's "
                       'one-pass direct estimate, no diffusion.', lower_bound=0)
  flags.DEFINE_enum('method', None, list(sampler.METHODS), "solver: 'ddim' (the paper's), 'dpmpp_2m' "
                    "(DPM-Solver++(2M)) or 'heun' (EDM's second order, two evaluations per inner step).")
  flags.DEFINE_enum('schedule', None, list(schedules.SCHEDULES), 'sigma grid.')
  flags.DEFINE_float('eta', None, 'stochastic refinement level in [0, 1]; 0 = the deterministic (ODE) solver.',
                     lower_bound=0.0, upper_bound=1.0)
  flags.DEFINE_float('cutoff-hz', None, 'high-pass cut-off of the refinement noise in Hz; 0 = white noise.',
                     lower_bound=0.0)
  flags.DEFINE_integer('samples', None, 'samples per chunk, averaged (ensemble size).', lower_bound=1)
  flags.DEFINE_float('sigma-start', None, 'noise level sampling starts from, in (0, 1]; below 1 an estimate is '
                     'refined (--start).', upper_bound=1.0)
  flags.register_validator('sigma-start', lambda value: value is None or value > 0,
                           message='--sigma-start must be above 0')
  flags.DEFINE_enum('start', None, list(sampler.STARTS), "where sampling starts (default: the config's "
                    "sampler.start): 'direct' refines the model's own one-pass estimate from --sigma-start, "
                    "'noise' starts from pure noise (or from an estimate passed in, `diffvox separate --refine`).")


def sampler_overrides() -> dict[str, Any]:
  """The `config.sampler` fields set by the sampler flags on the command line, {field: value}."""
  return {field: FLAGS[flag].value for flag, field in SAMPLER_FLAGS if FLAGS[flag].value is not None}


def evaluation_options() -> dict[str, Any]:
  """The evaluation flags as the keyword arguments of `evaluate.evaluate_split` (and the experiments' wrappers):
  `dataset, split, data_dir, runs, max_tracks, museval, with_baselines, workers`."""
  return {'dataset': FLAGS.dataset, 'split': FLAGS.split, 'data_dir': FLAGS['data-dir'].value, 'runs': FLAGS.runs,
          'max_tracks': FLAGS['max-tracks'].value, 'museval': FLAGS.museval, 'with_baselines': FLAGS.baselines,
          'workers': FLAGS.workers}


def define_evaluation_flags(museval_default: bool | None = None) -> None:
  """Where to evaluate and how: `--dataset --split --data-dir --runs --max-tracks --museval --workers --baselines
  --out` (`museval_default` None: the config's eval.museval)."""
  flags.DEFINE_string('dataset', None, 'prepared dataset to evaluate on (default: the config\'s eval.dataset).')
  flags.DEFINE_string('split', None, 'split to evaluate (default: the config\'s eval.split).')
  flags.DEFINE_string('data-dir', None, 'folder of the prepared datasets (default: the config\'s data.data_dir).')
  flags.DEFINE_integer('runs', None, 'model evaluations per track (default: the config\'s eval.runs).',
                       lower_bound=1)
  flags.DEFINE_integer('max-tracks', None, 'evaluate only the first N tracks of the split.', lower_bound=1)
  flags.DEFINE_bool('museval', museval_default, 'also compute museval BSS Eval v4 (SDR/SIR/SAR/ISR)'
                    + (' (default: the config\'s eval.museval).' if museval_default is None else '.'))
  flags.DEFINE_integer('workers', 1, 'processes that compute the metrics (BSS Eval is slow) while the model '
                       'separates the next tracks; e.g. the number of CPU cores on a GPU machine.', lower_bound=1)
  flags.DEFINE_bool('baselines', True, 'also score the mixture (lower bound) and the oracle IRM.')
  flags.DEFINE_string('out', None, 'output folder.')
