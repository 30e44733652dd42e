"""`diffvox evaluate`: score a checkpoint and the two baselines on a prepared dataset split.

    diffvox evaluate --checkpoint runs/diffdmx_rt --dataset musdb18hq --split test --workers 12 --out eval/rt
    diffvox evaluate --checkpoint runs/tiny --dataset mir1k --split dev --data-dir data_cache \\
        --steps 20 --eta 0.4 --cutoff-hz 5000 --runs 1 --max-tracks 4 --nomuseval --out eval/tiny

Writes into OUT: `config.json` (the checkpoint's config with the sampler flags applied), one JSON per track and
run under `model/run<k>/`, `mixture/run0/` and `oracle_irm/run0/` (museval's layout plus uSDR), `summary.json`
and `summary.md` (median and mean uSDR over tracks, the mean ± std over runs of the median, museval SDR/SIR/SAR),
and `index.html`: the summary, a per-track table sortable by any column, and players and spectrograms of the best,
median and worst tracks (separated again with run 0's key into `listen/<track>/`; open it in a browser).
Results already in OUT are reused, so an interrupted evaluation resumes; results made with other settings are
refused. The model runs `--runs` times per track with different seeds (the paper: 5, mean reported); the
baselines are deterministic and run once. BSS Eval costs about 50 s of CPU per 4-minute stereo track and run:
`--workers N` computes the metrics in N processes while the model separates the next tracks. See
`diffvox_jax/evaluate.py` and `diffvox_jax/results.py`.
"""

import pathlib

from absl import flags

from diffvox_jax import config as config_lib
from diffvox_jax import evaluate, flag_groups, inference, pages
from diffvox_jax.commands import common

FLAGS = flags.FLAGS
FLAG_GROUPS = (
    ('model', ('checkpoint', 'ema', 'label')),
    ('evaluation', ('dataset', 'split', 'data-dir', 'runs', 'max-tracks', 'museval', 'baselines', 'workers', 'out')),
    ('sampler', tuple(flag for flag, _ in flag_groups.SAMPLER_FLAGS) + ('seed',)),
)


def define_flags() -> None:
  flags.DEFINE_string('checkpoint', None, 'training workdir or exported model folder (config.json beside it).')
  flags.DEFINE_bool('ema', True, 'use the EMA parameters of a training workdir (--noema: the raw parameters).')
  flag_groups.define_evaluation_flags()
  flag_groups.define_sampler_flags()
  flags.DEFINE_integer('seed', None, 'base random seed (default: the config\'s seed); run k of a track uses its own '
                       'key derived from it.')
  flags.DEFINE_string('label', None, 'the model\'s name in the tables (default: the checkpoint folder\'s name).')


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    common.fail(f'unexpected arguments: {" ".join(argv[1:])}')
  if not FLAGS.checkpoint or not FLAGS.out:
    common.fail('--checkpoint and --out are required')
  try:
    config, params = inference.load_for_inference(inference.resolve_checkpoint(FLAGS.checkpoint),
                                                       use_ema=FLAGS.ema)
    if FLAGS.seed is not None:
      config.seed = FLAGS.seed
    config = config_lib.with_sampler_overrides(config, flag_groups.sampler_overrides())
  except (ValueError, OSError) as error:
    common.fail(str(error))
  try:
    summary = evaluate.evaluate_split(
        config, params, FLAGS.out, label=FLAGS.label or pathlib.Path(FLAGS.checkpoint).resolve().name,
        checkpoint=str(pathlib.Path(FLAGS.checkpoint).resolve()), **flag_groups.evaluation_options())
    examples = evaluate.listening_examples(config, params, summary, FLAGS.out, data_dir=FLAGS['data-dir'].value)
    page = pages.evaluation_page(pathlib.Path(FLAGS.out), summary, examples)
  except (ValueError, OSError) as error:
    common.fail(str(error))
  print((pathlib.Path(FLAGS.out) / 'summary.md').read_text(), end='')
  print(f'{len(summary["tracks"])} tracks; results in {FLAGS.out}; listen: open {page.resolve()} in a browser')
