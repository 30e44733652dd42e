"""The spectral models (`model.kind` 'spectral' and 'mask'): recurrent networks over STFT frames.

Why they exist: on the CPU budgets of this project the waveform U-Nets of the paper learn little beyond a blurred
posterior mean (docs/results.md, "Why sampling did not pay"). A magnitude-mask network over STFT frames, the
design of Open-Unmix (Stoeter et al., 2019), learns far faster; here it is both the discriminative baseline and
the conditioner of a diffusion model whose generator refines its estimate.

MaskEstimator (the conditioner, and the whole 'mask' baseline), per frame of the mixture's STFT M:

    log1p|M| (channels x bins) -> dense -> LayerNorm -> tanh -> BLSTM x layers -> [input, BLSTM] -> dense ->
    LayerNorm -> ReLU -> dense -> sigmoid = mask (channels x bins);  estimate = istft(mask * M)

The frame features after the second dense are the conditioning handed to the generator.

SpectralGenerator (the 'spectral' kind's denoiser), per frame, from X = stft(x_sigma), the conditioning h and sigma
(with `generator_sees_mixture`, log1p|M| and the conditioner's mask join the first concatenation):

    [log1p|X|, h] -> dense -> LayerNorm -> FiLM(sigma) -> tanh -> BLSTM x layers -> [., h] -> dense -> ReLU ->
    dense -> complex coefficients a, b (channels x bins);  x0_hat = istft(a * X + b * M)

and returns v_hat = (alpha x_sigma - x0_hat) / max(beta, BETA_FLOOR) (Eq. 5 solved for v). The floor bounds the
training loss at tiny sigma; the module the sampler runs (`sampling=True`, `models.for_sampling`) divides by beta
itself, so the sampler's x0 is the generator's x0_hat at every sigma (with the floor, a grid point below sigma
0.013, as the `edm` and `log_snr` grids end with, would get a wrong x0 there). The complex
coefficients let it correct the mixture's phase, which a magnitude mask cannot. Shapes: audio
`(batch, time, channels)`, time a multiple of `hop`; frames = time / hop + 1.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from diffvox_jax import diffusion
from diffvox_jax.models.diffdmx import Conditioning
from diffvox_jax.models.layers import FiLM, SigmaEmbedding
from diffvox_jax.models.stft import istft, stft

# In training, below this noise scale v_hat divides by the floor instead of beta (only sigma < 0.013 is affected).
BETA_FLOOR = 0.02
# In sampling, the divisor's floor only guards against beta = 0 (the sampler never evaluates at sigma = 0).
SAMPLING_BETA_FLOOR = 1e-12


@dataclasses.dataclass(frozen=True)
class SpectralSpec:
  """Hyperparameters of the spectral networks (built from `config.model.spectral`)."""

  n_fft: int
  hop: int
  hidden: int
  layers: int
  generator_hidden: int
  generator_layers: int
  fourier_features: int
  audio_channels: int
  residual: bool = True
  detach_conditioner: bool = True
  freeze_conditioner: bool = False
  generator_sees_mixture: bool = False
  conditioner_gain: float = 1.0  # the conditioner's features read the mixture times this (its units / ours).
  dropout: float = 0.0  # between the conditioner's BLSTM layers, in training only (Open-Unmix: 0.4).

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'SpectralSpec':
    spectral = config.model.spectral
    return cls(n_fft=spectral.n_fft, hop=spectral.hop, hidden=spectral.hidden, layers=spectral.layers,
               generator_hidden=spectral.generator_hidden, generator_layers=spectral.generator_layers,
               fourier_features=spectral.fourier_features, audio_channels=config.data.channels,
               residual=bool(spectral.get('residual', True)),
               detach_conditioner=bool(spectral.get('detach_conditioner', True)),
               freeze_conditioner=bool(spectral.freeze_conditioner),
               generator_sees_mixture=bool(spectral.generator_sees_mixture),
               conditioner_gain=conditioner_gain(config), dropout=float(spectral.get('dropout', 0.0)))

  @property
  def bins(self) -> int:
    return self.n_fft // 2 + 1


def conditioner_gain(config: ml_collections.ConfigDict) -> float:
  """`model.spectral.conditioner_data_scale / diffusion.data_scale` (1 when the former is 0: the same units)."""
  scale = float(config.diffusion.get('data_scale', 1.0))
  return float(config.model.spectral.conditioner_data_scale or scale) / scale


def _frame_features(spectrum: jax.Array) -> jax.Array:
  """`(batch, frames, channels, bins)` complex -> log-compressed magnitudes `(batch, frames, channels * bins)`."""
  batch, frames = spectrum.shape[:2]
  return jnp.log1p(jnp.abs(spectrum)).reshape(batch, frames, -1)


class BLSTM(nn.Module):
  """`layers` bidirectional LSTMs of `features` units in all (half per direction): `(batch, frames, d)` ->
  `(batch, frames, features)`. `dropout` acts between layers when the call has a 'dropout' rng (training)."""

  features: int
  layers: int
  dropout: float = 0.0

  @nn.compact
  def __call__(self, h: jax.Array) -> jax.Array:
    for i in range(self.layers):
      if i and self.dropout:
        h = nn.Dropout(self.dropout, deterministic=not self.has_rng('dropout'))(h)
      h = nn.Bidirectional(nn.RNN(nn.OptimizedLSTMCell(self.features // 2), name=f'forward_{i}'),
                           nn.RNN(nn.OptimizedLSTMCell(self.features // 2), name=f'backward_{i}'))(h)
    return h


class MaskEstimator(nn.Module):
  """The Open-Unmix-style mask network. Returns (frame features `(batch, frames, hidden)`, mask
  `(batch, frames, channels, bins)`, estimate `(batch, time, channels)` float32)."""

  spec: SpectralSpec

  @nn.compact
  def __call__(self, mixture: jax.Array) -> tuple[jax.Array, jax.Array]:
    spec = self.spec
    spectrum = stft(mixture, spec.n_fft, spec.hop)
    frames = _frame_features(spectrum * spec.conditioner_gain)  # the mask is scale-free: applied to `spectrum`.
    h = jnp.tanh(nn.LayerNorm(name='input_norm')(nn.Dense(spec.hidden, name='input')(frames)))
    h = jnp.concatenate([h, BLSTM(spec.hidden, spec.layers, spec.dropout, name='blstm')(h)], axis=-1)
    features = nn.relu(nn.LayerNorm(name='features_norm')(nn.Dense(spec.hidden, name='features')(h)))
    mask = nn.sigmoid(nn.Dense(spec.audio_channels * spec.bins, name='mask')(features))
    mask = mask.reshape(spectrum.shape)
    return features, mask, istft(mask * spectrum, spec.n_fft, spec.hop, mixture.shape[1])


class SpectralGenerator(nn.Module):
  """Predicts v `(batch, time, channels)` float32 from x_sigma, sigma `(batch,)`, the mixture, the conditioner's
  frame features `(batch, frames, hidden)` and its mask `(batch, frames, channels, bins)`. `sampling`: the exact
  conversion of x0_hat to v (no `BETA_FLOOR`)."""

  spec: SpectralSpec
  sampling: bool = False

  @nn.compact
  def __call__(self, x_sigma: jax.Array, sigma: jax.Array, mixture: jax.Array, features: jax.Array,
               mask: jax.Array) -> jax.Array:
    spec = self.spec
    time = x_sigma.shape[1]
    noisy, mix = stft(x_sigma, spec.n_fft, spec.hop), stft(mixture, spec.n_fft, spec.hop)
    modulation = SigmaEmbedding(spec.fourier_features, spec.generator_hidden, name='sigma_embedding')(sigma)
    inputs = [_frame_features(noisy), features]
    if spec.generator_sees_mixture:  # what a second stage needs to correct the first: the mixture and its mask.
      inputs += [_frame_features(mix), mask.reshape(mask.shape[:2] + (-1,))]
    h = nn.Dense(spec.generator_hidden, name='input')(jnp.concatenate(inputs, axis=-1))
    h = jnp.tanh(FiLM(name='film')(nn.LayerNorm(name='input_norm')(h), modulation))
    h = BLSTM(spec.generator_hidden, spec.generator_layers, name='blstm')(h)
    h = nn.relu(nn.Dense(spec.generator_hidden, name='hidden')(jnp.concatenate([h, features], axis=-1)))
    coefficients = nn.Dense(4 * spec.audio_channels * spec.bins, kernel_init=nn.initializers.zeros,
                            name='coefficients')(h)
    a_re, a_im, b_re, b_im = jnp.split(coefficients.reshape(noisy.shape[:2] + (4, -1)), 4, axis=2)
    a = jax.lax.complex(a_re, a_im).reshape(noisy.shape)
    b = jax.lax.complex(b_re, b_im).reshape(noisy.shape)
    if spec.residual:  # b corrects the conditioner's mask: at initialisation x0_hat is the direct estimate.
      b = b + mask
    x0_hat = istft(a * noisy + b * mix, spec.n_fft, spec.hop, time)
    alpha, beta = diffusion.alpha_beta(sigma)
    floor = SAMPLING_BETA_FLOOR if self.sampling else BETA_FLOOR
    alpha, beta = alpha[:, None, None], jnp.maximum(beta, floor)[:, None, None]
    return (alpha * x_sigma.astype(jnp.float32) - x0_hat) / beta


class SpectralDiffDMX(nn.Module):
  """The spectral Diff-DMX (`with_generator`) or the mask baseline alone; the same interface as `DiffDMX`.

  `condition` returns a `Conditioning` whose features are `(frame features, mixture)`, whose reconstruction
  estimate is the mask estimate and whose latent estimate is None (these models have no bottleneck, so no L_lat).
  The baseline (`with_generator=False`) has no `denoise`; its `__call__` returns `(None, conditioning)`.
  """

  spec: SpectralSpec
  with_generator: bool = True
  sampling: bool = False  # the generator's exact v for the sampler (`models.for_sampling`); parameters unchanged.

  def setup(self):
    self.conditioner = MaskEstimator(self.spec)
    if self.with_generator:
      self.generator = SpectralGenerator(self.spec, self.sampling)

  def condition(self, mixture: jax.Array) -> Conditioning:
    features, mask, estimate = self.conditioner(mixture)
    if self.spec.freeze_conditioner:  # a fixed first stage: no gradient reaches it (the optimizer skips it too).
      features, mask, estimate = jax.lax.stop_gradient((features, mask, estimate))
    elif self.spec.detach_conditioner:  # L_diff then trains the generator only; the conditioner learns from L_rec.
      features, mask = jax.lax.stop_gradient(features), jax.lax.stop_gradient(mask)
    return Conditioning((features, mask, mixture.astype(jnp.float32)), None, estimate)

  def denoise(self, x_sigma: jax.Array, sigma: jax.Array,
              features: tuple[jax.Array, jax.Array, jax.Array]) -> jax.Array:
    frame_features, mask, mixture = features
    return self.generator(x_sigma, sigma, mixture, frame_features, mask)

  def __call__(self, x_sigma: jax.Array, sigma: jax.Array, mixture: jax.Array):
    conditioning = self.condition(mixture)
    v_hat = self.denoise(x_sigma, sigma, conditioning.features) if self.with_generator else None
    return v_hat, conditioning
