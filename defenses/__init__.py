"""Built-in defenses; importing this package registers them."""
from . import adversarial_training, deep_image_prior, feature_squeezing, invert_and_classify, none, pixeldefend  # noqa: F401  (label smoothing lives with adversarial training)
