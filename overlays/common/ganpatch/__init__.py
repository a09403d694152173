"""ganpatch: the shared library of the ganpatch overlays.

Submodules (import the one you need; `import ganpatch` itself imports nothing heavy):
  clip       per-network gradient clipping (norm with any p-norm / value)
  optim      clipped SGD / Adam, their stochastic-extragradient versions, normalized SGD, optimistic Adam,
             ACClip (from acclip), `build_optimizer`; optim_base holds their common base class
  bmc        Brownian Motion Controller loss terms and sampler
  gradnoise  heavy-tailed gradient-noise measurements and statistics (plots: gradnoise_plot)
  dirac      Dirac-GAN study of BMC (`python -m ganpatch.dirac --figure/--table`)
"""
