"""The project's small vocabulary: norms, attack kinds and threat models.

Strings from the command line or a record are converted to these enums once, at the edge.
"""
from __future__ import annotations

from enum import Enum


class Norm(str, Enum):
    """The norm an attack natively measures its perturbation in."""

    LINF = "linf"
    L2 = "l2"
    L0 = "l0"


class AttackKind(str, Enum):
    """``fixed-eps`` attacks run at each budget; ``minimal`` ones run once until they fool the model."""

    FIXED = "fixed-eps"
    MINIMAL = "minimal"


class Threat(str, Enum):
    """Who the attacker sees (see docs/design.md, "Threat models")."""

    OBLIVIOUS = "oblivious"
    ADAPTIVE = "adaptive"
    TRANSFER = "transfer"
