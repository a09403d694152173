"""ganpatch: the shared library of the ganpatch overlays.

Submodules (import the one you need; `import ganpatch` itself imports nothing heavy):
  clip       per-network gradient clipping (norm / value)
  optim      clipped SGD / Adam and their stochastic-extragradient versions, `build_optimizer`
  bmc        Brownian Motion Controller loss terms and sampler
  gradnoise  heavy-tailed gradient-noise measurements and statistics (plots: gradnoise_plot)
  dirac      Dirac-GAN study of BMC (`python -m ganpatch.dirac --figure/--table`)
  stylegan   what the two StyleGAN trees share: train.py options, phase-loop helpers, launching, gradient noise
"""
