"""Arithmetic over results, with no model in sight: Pareto fronts and picks, rank agreement,
hypervolume. Everything here takes plain numbers and rows, so it is tested against hand
computations and used by every stage that compares candidates.
"""
