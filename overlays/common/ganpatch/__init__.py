"""ganpatch: the shared library of the ganpatch overlays.

Submodules (import the one you need; `import ganpatch` itself imports nothing heavy):
  clip       per-network gradient clipping (norm / value)
  optim      clipped SGD / Adam and their stochastic-extragradient versions, `build_optimizer`
  seg        one player's step on fresh minibatches: plain, or a complete clipped-SEG step
  schedule   learning-rate schedules of the iteration alone (linear decay to 0)
  buffers    module buffers (BatchNorm statistics, power iterations) restored after forward passes
  bmc        Brownian Motion Controller loss terms and sampler
  gradnoise  heavy-tailed gradient-noise measurements and statistics (plots: gradnoise_plot)
  gradnoise_networks  both passes for a GAN's networks at a checkpoint, nothing updated
  dirac      Dirac-GAN study of BMC (`python -m ganpatch.dirac --figure/--table`)
"""
