"""Built-in defenses; importing this package registers them (label smoothing lives with adversarial training)."""
from . import (  # noqa: F401
    adversarial_training,
    deep_image_prior,
    feature_squeezing,
    invert_and_classify,
    none,
    pixeldefend,
    robust_manifold,
)
