"""Table 2 of the paper: its 14 (steps, eta, cut-off) rows, zipped (`experiments/table2_sampling.py --full` runs
the whole product instead)."""

from experiments import paper


def get_sweep():
  return {
      'fields': {
          'sampler.steps': tuple(row.steps for row in paper.TABLE2),
          'sampler.eta': tuple(row.eta for row in paper.TABLE2),
          'sampler.cutoff_hz': tuple(row.cutoff_hz for row in paper.TABLE2),
      },
      'mode': 'zip',
  }
