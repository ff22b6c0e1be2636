"""Data sets: reading them, splitting them, batching them.

``sets`` turns a space's ``data:`` section into train, validation (and, where the data set has
one, test) splits through a registry of loaders by name; ``idx`` reads the MNIST family's IDX
files; ``loaders`` batches a split in a seeded order. A new data set is one loader function
registered in ``sets.DATASETS`` (and its name in ``DataSpec.dataset``).
"""
