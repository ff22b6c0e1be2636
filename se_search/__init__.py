"""se-search: neural architecture search over Squeeze-and-Excitation placement."""

__version__ = "0.1.0"
