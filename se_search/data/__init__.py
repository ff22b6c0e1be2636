"""Data sets: reading them, splitting them, batching them."""
