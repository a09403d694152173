# Part of ganpatch (not NVIDIA code): the Dirac-GAN study of GAN-BMC, in the tree the authors built it on.

"""Dirac-GAN with the Brownian Motion Controller: Figure 1 and Tables 1-2 of Luo, Zhu, Chen, Zhu, "Stabilizing
GANs' Training with Brownian Motion Controller" (ICML 2023, arXiv 2306.10468).

    python dirac_gan.py --figure fig1.png   # trajectories without and with BMC over the vector field, ||X_k||
    python dirac_gan.py --table             # iterations to converge per (rho1, rho2, beta), next to the paper's

The simulator, every option and their defaults are ganpatch.dirac's (`python dirac_gan.py --help`).
"""

import ganpatch.dirac

if __name__ == '__main__':
    ganpatch.dirac.main(prog='dirac_gan.py')
