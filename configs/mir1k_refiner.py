"""mir1k_refiner: a diffusion generator that refines the fixed estimate of the trained `mir1k_mask` baseline.

The paper's framing of the generator as a refiner of a good first estimate, taken literally: the conditioner is the
shipped baseline `mask_baseline_16k` (`model.spectral.conditioner_from`), frozen (`freeze_conditioner`: no
gradient, no weight decay), so this model's direct estimate *is* the baseline's. The generator (3-layer BLSTM of
width 256, the baseline's own capacity) sees the noisy residual, the baseline's frame features, the mixture and the
baseline's mask (`generator_sees_mixture`), and diffuses the residual vocals minus the baseline's estimate
(`diffusion.target='residual'`, data scaled by 10, Min-SNR-5); the conditioner still reads the mixture in the
baseline's own units (`conditioner_data_scale`). The conditioner's L_rec is constant here, so its
weight is 0.

    diffvox train --config mir1k_refiner --workdir runs/mir1k_refiner --config.data.data_dir=data_cache
"""

from diffvox_jax.configs import mir1k_spectral


def get_config():
  config = mir1k_spectral.get_config()
  spectral = config.model.spectral
  spectral.conditioner_from = 'mask_baseline_16k'
  spectral.freeze_conditioner = True
  spectral.generator_sees_mixture = True
  spectral.conditioner_data_scale = 1.0  # the baseline's units (this model's diffusion runs at data_scale 10).
  spectral.generator_layers = 3
  config.diffusion.reconstruction_weight = 0.0
  config.train.num_steps = 10000
  return config
