"""Built-in models: classifiers (ResNet-style, VGG-style); generative models arrive with their defenses."""
from . import classifiers  # noqa: F401  (registers "resnet" and "vgg")
