"""ganpatch: the shared library of the ganpatch overlays.

Submodules (import the one you need; `import ganpatch` itself imports nothing heavy):
  clip       per-network gradient clipping (norm with any p-norm / value)
  optim      clipped SGD / Adam, their stochastic-extragradient versions, normalized SGD, optimistic Adam,
             ACClip (from acclip), `build_optimizer`; optim_base holds their common base class
  seg        a step of one player, or of several from one point, on fresh minibatches: plain, or a
             complete clipped-SEG step
  schedule   learning-rate schedules of the iteration alone (linear decay to 0)
  buffers    module buffers (BatchNorm statistics, power iterations) restored after forward passes;
             spectral norm's power iteration held, or advanced once
  bmc        Brownian Motion Controller loss terms and sampler
  gradnoise  heavy-tailed gradient-noise measurements and statistics (plots: gradnoise_plot)
  gradnoise_networks  both passes for a GAN's networks at a checkpoint, nothing updated
  dirac      Dirac-GAN study of BMC (`python -m ganpatch.dirac --figure/--table`)
  drift      discretization-drift coefficients and explicit regularizers (runge_kutta: RK updates;
             drift_study: the toy studies, `python -m ganpatch.drift_study --figure`)
  distributed  torchrun / SLURM launch detection and process-group helpers
  fake_data  tiny generated datasets for smoke runs and tests (`python -m ganpatch.fake_data`)
  stylegan   what the two StyleGAN trees share: train.py options, phase-loop helpers, launching, gradient noise
"""
