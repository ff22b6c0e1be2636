"""The results database and the files beside it: every ``se_`` table (``tables``), the
plumbing of a database (``database``), writing and reading se-search's tables (``store``),
a study read back (``results``), what optuna-dashboard shows (``dashboard``), and where
checkpoints and artifacts go (``artifacts``).
"""
