"""The paper's reported numbers (arXiv 2511.21342, Tables 1 and 2), for the columns beside ours.

All SDRs are the median utterance-level SDR (dB) over the 50 MUSDB18-HQ test tracks; the stochastic samplers'
numbers are the mean of 5 evaluations.
"""

from typing import NamedTuple


class ModelRow(NamedTuple):
  model: str
  generative: bool | None  # None: not applicable (the oracle).
  steps: int | None
  params: str
  extra_data: str
  sdr: float
  sir: float | None = None


# Table 1, in the paper's order.
TABLE1 = (
    ModelRow('IRM oracle', None, None, 'N/A', 'N/A', 9.43, 20.78),
    ModelRow('GAN-prior', True, 1000, '121M', '✗', -0.44),
    ModelRow('InstGlow', True, 150, '13M', '✗', 3.46),
    ModelRow('MSDM', True, 150, '405M', '✗', 3.64),
    ModelRow('Diff-DMX-RT-musdb', True, 50, '99M', '✗', 5.38),
    ModelRow('Diff-DMX-extra', True, 50, '71M', '≈400 h', 6.00),
    ModelRow('Diff-DMX-RT-extra', True, 50, '99M', '≈400 h', 8.77, 21.37),
    ModelRow('HT-Demucs', False, 1, '346M', '✗', 7.93),
    ModelRow('HT-Demucs (extra data)', False, 1, '346M', '≈53 h', 9.37),
)


class SamplingRow(NamedTuple):
  steps: int
  eta: float
  cutoff_hz: float  # 0: no filter (white refinement noise).
  sdr: float


# Table 2: sampling ablation of Diff-DMX-RT-extra.
TABLE2 = (
    SamplingRow(20, 0.0, 0.0, 6.86),
    SamplingRow(20, 0.2, 0.0, 6.85),
    SamplingRow(20, 0.2, 600.0, 6.97),
    SamplingRow(20, 0.2, 2000.0, 7.36),
    SamplingRow(20, 0.2, 5000.0, 7.55),
    SamplingRow(20, 0.4, 5000.0, 8.26),
    SamplingRow(50, 0.2, 0.0, 7.17),
    SamplingRow(50, 0.4, 0.0, 7.25),
    SamplingRow(50, 0.4, 600.0, 7.59),
    SamplingRow(50, 0.4, 2000.0, 8.64),
    SamplingRow(50, 0.4, 5000.0, 8.77),
    SamplingRow(50, 0.8, 5000.0, 8.33),
    SamplingRow(100, 0.4, 5000.0, 8.52),
    SamplingRow(100, 0.8, 5000.0, 7.20),
)
TABLE2_STEPS = (20, 50, 100)
TABLE2_ETAS = (0.0, 0.2, 0.4, 0.8)
TABLE2_CUTOFFS_HZ = (0.0, 600.0, 2000.0, 5000.0)
