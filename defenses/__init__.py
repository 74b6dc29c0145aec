"""Built-in defenses; importing this package registers them."""
from . import (  # noqa: F401  (label smoothing lives with adversarial training)
    adversarial_training,
    feature_squeezing,
    jpeg,
    none,
    pixel_deflection,
    pixeldefend,
    prm,
    randomization,
    region_based,
    spatial_smoothing,
    tv_minimization,
)
