"""Built-in defenses; importing this package registers them (label smoothing lives with adversarial training)."""
from . import (  # noqa: F401
    adversarial_training,
    deep_image_prior,
    feature_squeezing,
    invert_and_classify,
    jpeg,
    none,
    pixel_deflection,
    pixeldefend,
    prm,
    randomization,
    region_based,
    robust_manifold,
    spatial_smoothing,
    tv_minimization,
)
