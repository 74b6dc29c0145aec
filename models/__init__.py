"""Built-in models: classifiers (ResNet-style, VGG-style), the PixelCNN density model and the GAN."""
from . import classifiers, dip, gan, pixelcnn  # noqa: F401  (registers "resnet", "vgg", "dip", "gan" and "pixelcnn")
