"""Built-in attacks; importing this package registers them.

Adapters run foolbox 3 or torchattacks wherever they have the attack; L-BFGS (Szegedy et al.) is ours.
"""
from . import gradient, lbfgs, perturbation, saliency  # noqa: F401
