"""Helpers for tests and benchmarks, never used by a search (as ``optuna.testing``): a
stand-in evaluator that trains by arithmetic, headless Chromium, and the dashboard in a
child process."""
