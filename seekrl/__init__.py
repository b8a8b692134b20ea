"""seekrl: train, evaluate and serve adaptive search agents."""
__version__ = "0.1.0"
