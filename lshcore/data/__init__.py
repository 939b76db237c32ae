"""Dataset loaders (``datasets``: MNIST, Fashion-MNIST, digits, XMC text files), taking a
path or ``$LSHCORE_DATA``."""
