"""diffvox_jax: Diff-DMX, generative singing-voice separation with a mixture-conditioned diffusion model."""

__version__ = '0.1.0'
