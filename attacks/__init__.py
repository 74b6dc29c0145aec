"""Built-in attacks; importing this package registers them.

Adapters run foolbox 3 or torchattacks wherever they have the attack; L-BFGS (Szegedy et al.) is ours.
:mod:`attacks.adaptive` turns a defended pipeline into one model for adaptive attacks (BPDA, EOT).
"""
from . import autoattack, gradient, lbfgs, perturbation, saliency  # noqa: F401
