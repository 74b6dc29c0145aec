"""Built-in models: classifiers (ResNet-style, VGG-style) and the PixelCNN density model."""
from . import classifiers, pixelcnn  # noqa: F401  (registers "resnet", "vgg" and "pixelcnn")
