"""The Diff-DMX sampler: DDIM in the v-parameterisation with the paper's high-pass refinement noise (§3).

One call maps mixture chunks `(batch, time, channels)` to vocal estimates of the same shape:

1. the conditioner runs once per chunk; its features are repeated for the `num_samples` ensemble members;
2. the state starts as white noise at sigma = 1, or (refinement) as an estimate noised to `sigma_start`: one
   passed in (`start='noise'`, `initial`) or the conditioner's own direct estimate (`start='direct'`);
   `steps=0` returns that direct estimate without running the generator;
3. one `jax.lax.scan` over the static sigma grid runs the generator `steps` times. Step i, from sigma_i to
   sigma_{i+1} (alpha, beta = cos, sin of pi sigma / 2), is Eqs. 4 to 7 and 10:

     v = m(x, sigma_i, c);  x0 = alpha_i x - beta_i v;  eps = beta_i x + alpha_i v
     x <- alpha_{i+1} x0 + beta'_{i+1} eps + delta_{i+1} HPF(n_i),   n_i ~ N(0, I)

   with the standard DDIM form of the stochastic term (docs/paper.md; the paper's printed Eqs. 8 to 9 are
   garbled): delta_{i+1} = eta (beta_{i+1} / beta_i) sqrt(1 - alpha_i^2 / alpha_{i+1}^2) and
   beta'_{i+1} = sqrt(beta_{i+1}^2 - delta_{i+1}^2). HPF is `noise.shaped_normal` (Butterworth, unit variance).
   The grid ends at sigma = 0, where alpha = 1 and beta' = delta = 0, so the last step returns x0.

   Higher-order solvers (`method`) change only the data prediction the step transports: x0 <- x0 + c and
   eps <- eps - (alpha_i / beta_i) c, so eta = 0 is the published ODE step and eta > 0 adds the same shaped
   noise as DDIM (the paper's refinement noise keeps its meaning for every method):
   - 'dpmpp_2m', DPM-Solver++(2M) (Lu et al. 2022, data prediction, multistep): c = w_i (x0_i - x0_{i-1}) with
     w_i = h_i / (2 h_{i-1}) and h_i the step's log-SNR increment, log(alpha / beta). w = 0 (a DDIM step) at
     the first step, after a step from sigma = 1 (there h_{i-1} is infinite, the log-SNR being -inf) and at the
     last step to sigma = 0 (the official solver's `lower_order_final`). One evaluation per step.
   - 'heun', the second-order Heun step of EDM (Karras et al. 2022) on x / alpha against beta / alpha: a DDIM
     (Euler) predictor x' to sigma_{i+1}, a second evaluation there, and eps replaced by the mean of the two
     (c = -(beta_i / (2 alpha_i)) (eps' - eps_i)). Euler alone from sigma = 1 (beta / alpha is infinite) and on
     the last step to sigma = 0, as in EDM: `steps + steps - 2` evaluations from noise (`settings.evaluations`).

Everything that shapes the computation (method, steps, schedule, eta, filter, rate, ensemble size, sigma_start) is a
`SamplerSettings`, static under `jit`: `compiled_sampler(network, settings)` is cached, so each setting compiles
once per chunk shape.

PRNG: chunk b of a call gets key `fold_in(rng, b)` (or `rng[b]` when a key per chunk is passed), ensemble member
j of that chunk `fold_in(chunk_key, j)`; its starting noise uses `fold_in(member_key, 0)` and step i's refinement
noise `fold_in(member_key, i + 1)`. Passing a key per chunk makes a chunk's result independent of its batch.
"""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from diffvox_jax import diffusion, noise, schedules

METHODS = ('ddim', 'dpmpp_2m', 'heun')
STARTS = ('noise', 'direct')  # pure noise (the paper), or the conditioner's direct estimate at sigma_start
TARGETS = ('vocals', 'residual')  # what the generator diffuses (`diffusion.target`)

Params = Any
Features = Any  # a pytree of arrays with a leading batch axis (e.g. `Conditioning.features`).


class Network(NamedTuple):
  """The two halves of the model as pure functions of the parameters.

  condition: `(params, mixture (batch, time, channels)) -> features`, run once per chunk.
  denoise: `(params, x_sigma (batch, time, channels), sigma (batch,), features) -> v_hat (batch, time, channels)`.
  estimate: `(params, mixture) -> (features, direct estimate (batch, time, channels))`: the conditioner with its
    own one-pass estimate (H_128), for `steps=0` and `start='direct'`; None where the network has none.
  """

  condition: Callable[[Params, jax.Array], Features]
  denoise: Callable[[Params, jax.Array, jax.Array, Features], jax.Array]
  estimate: Callable[[Params, jax.Array], tuple[Features, jax.Array]] | None = None


def model_network(model) -> Network:
  """Binds a Diff-DMX Flax module (`models.build_model`) to `Network`; params are its `'params'` collection."""

  def condition(params: Params, mixture: jax.Array) -> Features:
    return model.apply({'params': params}, mixture, method='condition').features

  def denoise(params: Params, x_sigma: jax.Array, sigma: jax.Array, features: Features) -> jax.Array:
    return model.apply({'params': params}, x_sigma, sigma, features, method='denoise')

  def estimate(params: Params, mixture: jax.Array) -> tuple[Features, jax.Array]:
    conditioning = model.apply({'params': params}, mixture, method='condition')
    return conditioning.features, conditioning.reconstruction_estimate

  return Network(condition, denoise, estimate)


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
  """Static sampler configuration (hashable: one compilation per distinct value).

  Attributes:
    steps: T, the number of steps of the grid (generator evaluations for 'ddim' and 'dpmpp_2m'; see
      `evaluations`); 0 returns the conditioner's direct estimate (no generator).
    method: the solver, one of `METHODS` ('ddim', the paper's; 'dpmpp_2m'; 'heun').
    schedule: sigma grid name from `schedules.SCHEDULES`.
    eta: stochasticity in [0, 1]; 0 is deterministic DDIM.
    cutoff_hz: Butterworth high-pass cut-off of the refinement noise; 0 means white noise.
    filter_order: Butterworth order.
    sample_rate: rate of the audio in Hz (places the cut-off).
    num_samples: ensemble members per chunk, averaged.
    sigma_start: first noise level; below 1 an initial estimate is refined instead of sampling from noise.
    target: what the generator diffuses: 'vocals', or 'residual' (vocals minus the direct estimate, which is
      added back at the end; `config.diffusion.target`).
    start: where that estimate comes from: 'noise' (passed in as `initial`) or 'direct' (the conditioner's own).
    data_scale: the network's audio units (`config.diffusion.data_scale`): mixture and initial estimate are
      multiplied by it, the result divided by it.
  """

  steps: int = 50
  method: str = 'ddim'
  schedule: str = 'linear'
  eta: float = 0.0
  cutoff_hz: float = 0.0
  filter_order: int = 4
  sample_rate: int = 44100
  num_samples: int = 1
  sigma_start: float = 1.0
  start: str = 'noise'
  target: str = 'vocals'
  data_scale: float = 1.0

  def __post_init__(self):
    if self.steps < 0:
      raise ValueError(f'steps={self.steps} must be at least 0')
    if self.method not in METHODS:
      raise ValueError(f'method={self.method!r} is not one of {", ".join(METHODS)}')
    if self.start not in STARTS:
      raise ValueError(f'start={self.start!r} is not one of {", ".join(STARTS)}')
    if self.target not in TARGETS:
      raise ValueError(f'target={self.target!r} is not one of {", ".join(TARGETS)}')
    if self.start == 'direct' and self.steps and self.sigma_start >= 1.0:
      raise ValueError("start='direct' refines the direct estimate: it needs sigma_start < 1")
    if self.schedule not in schedules.SCHEDULES:
      raise ValueError(f'schedule={self.schedule!r} is not one of {sorted(schedules.SCHEDULES)}')
    if not 0.0 <= self.eta <= 1.0:
      raise ValueError(f'eta={self.eta} must lie in [0, 1]')
    if not 0.0 <= self.cutoff_hz < self.sample_rate / 2:
      raise ValueError(f'cutoff_hz={self.cutoff_hz} must lie in [0, {self.sample_rate / 2})')
    if self.filter_order < 1:
      raise ValueError(f'filter_order={self.filter_order} must be at least 1')
    if self.num_samples < 1:
      raise ValueError(f'num_samples={self.num_samples} must be at least 1')
    if not 0.0 < self.sigma_start <= 1.0:
      raise ValueError(f'sigma_start={self.sigma_start} must lie in (0, 1]')
    if not self.data_scale > 0.0:
      raise ValueError(f'data_scale={self.data_scale} must be positive')

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, **overrides) -> 'SamplerSettings':
    """Settings from `config.sampler` and `config.data.sample_rate`; keyword arguments replace fields."""
    sampler = config.sampler
    fields = dict(steps=int(sampler.steps), method=str(sampler.method),
                  schedule=str(sampler.schedule), eta=float(sampler.eta),
                  cutoff_hz=float(sampler.cutoff_hz), filter_order=int(sampler.filter_order),
                  sample_rate=int(config.data.sample_rate), num_samples=int(sampler.num_samples),
                  sigma_start=float(sampler.sigma_start), start=str(sampler.get('start', 'noise')),
                  target=str(config.diffusion.get('target', 'vocals')),
                  data_scale=float(config.diffusion.get('data_scale', 1.0)))
    fields.update(overrides)
    return cls(**fields)

  @property
  def refines(self) -> bool:
    """True when sampling starts from an estimate passed in (sigma_start < 1 with start 'noise')."""
    return self.sigma_start < 1.0 and self.start == 'noise' and self.steps > 0

  @property
  def uses_direct_estimate(self) -> bool:
    """True when the conditioner's own estimate is the result (steps 0) or the starting point."""
    return self.steps == 0 or self.start == 'direct' or self.target == 'residual'

  @property
  def evaluations(self) -> int:
    """Generator evaluations per ensemble member (Heun's corrector adds one wherever it applies)."""
    if self.steps == 0:
      return 0
    return self.steps + (int(np.sum(heun_corrected(self.sigmas()))) if self.method == 'heun' else 0)

  def sigmas(self) -> np.ndarray:
    """The sigma grid, float64 `(steps + 1,)`, from sigma_start down to 0."""
    return schedules.sigma_grid(self.schedule, self.steps, self.sigma_start)

  def noise_gain(self, length: int) -> np.ndarray | None:
    """The refinement-noise shaping gain for chunks of `length` samples (None: white noise)."""
    if self.cutoff_hz <= 0.0:
      return None
    return noise.shaping_gain(length, self.sample_rate, self.cutoff_hz, self.filter_order)


class StepCoefficients(NamedTuple):
  """Per-step scalars, each `(steps,)`: step i goes from sigma[i] to the next grid point."""

  sigma: np.ndarray  # noise level the network sees.
  alpha: np.ndarray  # alpha_i, beta_i: turn (x, v) into (x0, eps), Eqs. 5 and 6.
  beta: np.ndarray
  alpha_next: np.ndarray  # alpha_{i+1}: scale of x0 in Eq. 10.
  beta_next: np.ndarray  # beta'_{i+1}: scale of eps after rescaling for the fresh noise.
  delta: np.ndarray  # delta_{i+1}: scale of the fresh (shaped) noise.
  sigma_next: np.ndarray  # sigma_{i+1}: where Heun's corrector evaluates the generator.
  multistep: np.ndarray  # DPM-Solver++(2M)'s w_i (0 where the step is first order).
  corrected: np.ndarray  # 1.0 where Heun's corrector applies, else 0.0.



def heun_corrected(sigmas: np.ndarray) -> np.ndarray:
  """Where Heun's second evaluation applies, bool `(steps,)`: not from sigma = 1 and not into sigma = 0."""
  sigmas = np.asarray(sigmas, np.float64)
  return (sigmas[:-1] < 1.0) & (sigmas[1:] > 0.0)


def multistep_weights(sigmas: np.ndarray) -> np.ndarray:
  """DPM-Solver++(2M)'s w_i = h_i / (2 h_{i-1}) per step, float64 `(steps,)`, with h the log-SNR increments;
  0 at the first step, after a step from sigma = 1 and on the last step into sigma = 0."""
  sigmas = np.asarray(sigmas, np.float64)
  with np.errstate(divide='ignore'):
    log_snr = np.log(np.cos(np.pi * sigmas / 2)) - np.log(np.sin(np.pi * sigmas / 2))
  log_snr[sigmas >= 1.0], log_snr[sigmas <= 0.0] = -np.inf, np.inf
  h = np.diff(log_snr)
  weights = np.zeros_like(h)
  finite = np.isfinite(h[1:]) & np.isfinite(h[:-1])
  weights[1:][finite] = h[1:][finite] / (2 * h[:-1][finite])
  return weights


def step_coefficients(sigmas: np.ndarray, eta: float, method: str = 'ddim') -> StepCoefficients:
  """The DDIM/eta coefficients of docs/paper.md, and the higher-order methods' weights, in float64 for a
  decreasing grid `(steps + 1,)`."""
  sigmas = np.asarray(sigmas, np.float64)
  if sigmas.ndim != 1 or len(sigmas) < 2 or np.any(np.diff(sigmas) >= 0) or sigmas[-1] != 0.0:
    raise ValueError('the sigma grid must be strictly decreasing and end at 0')
  alpha, beta = np.cos(np.pi * sigmas / 2), np.sin(np.pi * sigmas / 2)
  alpha_now, beta_now, alpha_next, beta_next = alpha[:-1], beta[:-1], alpha[1:], beta[1:]
  delta = eta * (beta_next / beta_now) * np.sqrt(np.maximum(1.0 - alpha_now**2 / alpha_next**2, 0.0))
  beta_rescaled = np.sqrt(np.maximum(beta_next**2 - delta**2, 0.0))
  zeros = np.zeros_like(delta)
  multistep = multistep_weights(sigmas) if method == 'dpmpp_2m' else zeros
  corrected = heun_corrected(sigmas).astype(np.float64) if method == 'heun' else zeros
  return StepCoefficients(sigmas[:-1], alpha_now, beta_now, alpha_next, beta_rescaled, delta, sigmas[1:],
                          multistep, corrected)


def _member_keys(rng: jax.Array, batch: int, num_samples: int) -> jax.Array:
  """Typed keys `(batch * num_samples,)`, chunk-major, from one key or from one key per chunk `(batch,)`."""
  if not jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
    rng = jax.random.wrap_key_data(rng)
  if rng.ndim == 0:
    chunk_keys = jax.vmap(lambda index: jax.random.fold_in(rng, index))(jnp.arange(batch))
  elif rng.shape == (batch,):
    chunk_keys = rng
  else:
    raise ValueError(f'rng must be one key or one key per chunk ({batch},), got shape {rng.shape}')
  members = jax.vmap(lambda key: jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(num_samples)))
  return members(chunk_keys).reshape(batch * num_samples)


def _repeat_members(tree: Any, num_samples: int) -> Any:
  """Repeats every leaf's batch rows `num_samples` times (chunk-major), matching `_member_keys`."""
  return jax.tree.map(lambda leaf: jnp.repeat(leaf, num_samples, axis=0), tree)


def _noise(keys: jax.Array, fold: jax.Array | int, shape: tuple[int, int], gain: np.ndarray | None) -> jax.Array:
  """One noise draw per key: `(len(keys), time, channels)` from `fold_in(key, fold)`."""
  return jax.vmap(lambda key: noise.shaped_normal(jax.random.fold_in(key, fold), shape, gain))(keys)


def _initial_state(settings: SamplerSettings, keys: jax.Array, shape: tuple[int, int],
                   initial: jax.Array | None) -> jax.Array:
  """x at sigma_start: white noise, or the repeated initial estimate noised by Eq. 1 for refinement."""
  start_noise = _noise(keys, 0, shape, None)
  if initial is None:
    return start_noise
  initial = _repeat_members(initial.astype(jnp.float32) * settings.data_scale, settings.num_samples)
  sigma = jnp.full((initial.shape[0],), settings.sigma_start, jnp.float32)
  return diffusion.add_noise(initial, start_noise, sigma)


def solver_step(network: Network, settings: SamplerSettings, gain: np.ndarray | None, params: Params,
                features: Features, keys: jax.Array, carry: tuple[jax.Array, jax.Array], index: jax.Array,
                coefficients: StepCoefficients) -> tuple[jax.Array, jax.Array]:
  """One update (Eq. 10, with the method's data prediction) of the carry `(x, previous x0)`, both
  `(members, time, channels)`; `coefficients` holds step `index`'s scalars."""
  x, previous_x0 = carry
  sigma = jnp.full((x.shape[0],), coefficients.sigma, jnp.float32)
  v_hat = network.denoise(params, x, sigma, features).astype(jnp.float32)
  x0_hat = coefficients.alpha * x - coefficients.beta * v_hat
  eps_hat = coefficients.beta * x + coefficients.alpha * v_hat
  x0_step, eps_step = x0_hat, eps_hat
  if settings.method != 'ddim':
    if settings.method == 'dpmpp_2m':
      correction = coefficients.multistep * (x0_hat - previous_x0)
    else:
      correction = jax.lax.cond(coefficients.corrected > 0, functools.partial(_heun_correction, network),
                                lambda *_: jnp.zeros_like(x), params, features, x0_hat, eps_hat, coefficients)
    x0_step = x0_hat + correction
    eps_step = eps_hat - (coefficients.alpha / coefficients.beta) * correction
  x_next = coefficients.alpha_next * x0_step + coefficients.beta_next * eps_step
  if settings.eta > 0.0:
    x_next = x_next + coefficients.delta * _noise(keys, index + 1, x.shape[1:], gain)
  return x_next, x0_hat


def _heun_correction(network: Network, params: Params, features: Features, x0_hat: jax.Array, eps_hat: jax.Array,
                     coefficients: StepCoefficients) -> jax.Array:
  """Heun's change to x0: -(beta_i / (2 alpha_i)) (eps' - eps_i), eps' the generator's at the Euler (DDIM)
  predictor on sigma_{i+1}; the step's eps then becomes the mean of the two (alpha_i > 0 here)."""
  alpha_next, beta_next = diffusion.alpha_beta(coefficients.sigma_next)
  predictor = alpha_next * x0_hat + beta_next * eps_hat
  sigma = jnp.full((predictor.shape[0],), coefficients.sigma_next, jnp.float32)
  v_next = network.denoise(params, predictor, sigma, features).astype(jnp.float32)
  eps_next = beta_next * predictor + alpha_next * v_next
  return -(coefficients.beta / (2 * coefficients.alpha)) * (eps_next - eps_hat)


class Prepared(NamedTuple):
  """What every step needs: the repeated features, member keys, the initial state and the step scalars."""

  features: Features
  keys: jax.Array
  x: jax.Array
  coefficients: StepCoefficients  # float32 arrays `(steps,)`.
  offset: jax.Array | float  # added to the result: the direct estimate `(batch, time, ch)` for residual targets.


def _check_initial(settings: SamplerSettings, initial: jax.Array | None) -> None:
  if settings.refines and initial is None:
    raise ValueError(f'sigma_start={settings.sigma_start} < 1 refines an estimate: pass `initial`')
  if initial is not None and not settings.refines:
    raise ValueError("an initial estimate needs sigma_start < 1 and start='noise' (otherwise it would be ignored)")


def condition(network: Network, settings: SamplerSettings, params: Params,
              mixture: jax.Array) -> tuple[Features, jax.Array | None]:
  """Runs the conditioner once: (features, the direct estimate `(batch, time, channels)` in audio units, or None
  when the settings do not use it)."""
  scaled = mixture * settings.data_scale
  if not settings.uses_direct_estimate:
    return network.condition(params, scaled), None
  if network.estimate is None:
    raise ValueError('this network has no direct estimate (steps=0 and start="direct" need one)')
  features, direct = network.estimate(params, scaled)
  return features, direct.astype(jnp.float32) / settings.data_scale


def prepare(network: Network, settings: SamplerSettings, params: Params, mixture: jax.Array, rng: jax.Array,
            initial: jax.Array | None = None) -> Prepared:
  """Runs the conditioner once on `mixture (batch, time, channels)` and builds the state at sigma_start (from
  `initial`, or from the direct estimate with start='direct')."""
  _check_initial(settings, initial)
  batch, length, channels = mixture.shape
  features, direct = condition(network, settings, params, mixture)
  offset = 0.0
  if settings.target == 'residual':  # the state is vocals minus the direct estimate (zero for start='direct').
    offset = direct
    initial = None if initial is None and settings.start == 'noise' else (
        jnp.zeros_like(direct) if settings.start == 'direct' else initial - direct)
  elif settings.start == 'direct':
    initial = direct
  features = _repeat_members(features, settings.num_samples)
  keys = _member_keys(rng, batch, settings.num_samples)
  x = _initial_state(settings, keys, (length, channels), initial)
  coefficients = step_coefficients(settings.sigmas(), settings.eta, settings.method)
  return Prepared(features, keys, x, StepCoefficients(*(jnp.asarray(c, jnp.float32) for c in coefficients)),
                  offset)


def finish(settings: SamplerSettings, x: jax.Array, return_samples: bool,
           offset: jax.Array | float = 0.0) -> jax.Array | tuple[jax.Array, jax.Array]:
  """Averages the ensemble: `(batch * K, time, ch)` -> mean `(batch, time, ch)` [, members `(batch, K, time, ch)`],
  in audio units, plus `offset` (audio units, `(batch, time, ch)` or a scalar)."""
  members = x.reshape((-1, settings.num_samples) + x.shape[1:]) / settings.data_scale
  members = members + (offset[:, None] if jnp.ndim(offset) else offset)
  mean = jnp.mean(members, axis=1)
  return (mean, members) if return_samples else mean


def sample(network: Network, settings: SamplerSettings, params: Params, mixture: jax.Array, rng: jax.Array,
           initial: jax.Array | None = None, *, return_samples: bool = False):
  """Vocal estimates for mixture chunks (pure; use `compiled_sampler` for the jitted, cached version).

  Args:
    network: the conditioner and generator functions.
    settings: static sampler settings.
    params: network parameters.
    mixture: `(batch, time, channels)` float32 chunks; time must suit the network (a multiple of 128).
    rng: one PRNG key, or one per chunk `(batch,)`.
    initial: `(batch, time, channels)` estimate to refine; required iff `settings.sigma_start < 1`.
    return_samples: also return every ensemble member.

  Returns:
    `(batch, time, channels)` float32, the mean over `settings.num_samples` members, and with `return_samples`
    also the members `(batch, num_samples, time, channels)`. With `steps=0`: the direct estimate (one member).
  """
  if settings.steps == 0:
    _check_initial(settings, initial)
    direct = condition(network, settings, params, mixture)[1]
    return (direct, direct[:, None]) if return_samples else direct
  prepared = prepare(network, settings, params, mixture, rng, initial)
  gain = settings.noise_gain(mixture.shape[1])

  def body(carry, step):
    index, coefficients = step
    return solver_step(network, settings, gain, params, prepared.features, prepared.keys, carry, index,
                       coefficients), None

  (x, _), _ = jax.lax.scan(body, (prepared.x, jnp.zeros_like(prepared.x)),
                           (jnp.arange(settings.steps), prepared.coefficients))
  return finish(settings, x, return_samples, prepared.offset)


@functools.lru_cache(maxsize=32)
def compiled_sampler(network: Network, settings: SamplerSettings) -> Callable:
  """`jit(sample)` for one network and setting: `fn(params, mixture, rng, initial=None, *, return_samples=False)`.

  Cached on (network, settings): a `Network` compares by the identity of its functions, so build it once per
  model (e.g. `inference.network_for_config`).
  """
  return jax.jit(functools.partial(sample, network, settings), static_argnames=('return_samples',))
