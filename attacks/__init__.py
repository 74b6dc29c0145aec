"""Built-in attacks; importing this package registers them.

Adapters run foolbox 3 or torchattacks wherever they have the attack (DeepFool and Gaussian blur subclassed
so that finished examples stop costing: active.py); L-BFGS (Szegedy et al.), JSMA, a warm-started CW-L2 and CW-L0
are ours.
:mod:`attacks.adaptive` turns a defended pipeline into one model for adaptive attacks (BPDA, EOT).
"""
from . import (  # noqa: F401
    autoattack,
    cw,
    cw_l0,
    gradient,
    latent,
    lbfgs,
    manifold,
    onepixel,
    perturbation,
    saliency,
    substitute,
    unrolled,
)
