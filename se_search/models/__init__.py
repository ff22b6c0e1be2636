"""The vocabulary of a search: SE blocks, where they sit (variants), backbones and their
sites, architectures (a choice per site), and the surgery that puts blocks into a network.

Nothing here knows a search space; :mod:`se_search.space` selects from this vocabulary.
"""
