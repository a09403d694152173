"""What the two StyleGAN trees (NVlabs/stylegan3 and NVlabs/stylegan2-ada-pytorch) share, once.

Each tree's patches only wire these modules in; the code below runs inside either tree:
  options          the click options ganpatch adds to train.py, their validation and the config they write
  loop             phase-loop helpers of training_loop.py: SEG with two fresh minibatches, the optimizer step
  launch           one process per GPU (or CPU process): torch.distributed set-up, spawning
  gradnoise_driver the gradient-noise measurement behind each tree's gradnoise_train.py

`options`, `loop` and `launch` import neither tree; `gradnoise_driver` and `options.load_network_pickle`
import the tree's own `dnnlib` and `legacy` when called.
"""
