"""The results database and the files beside it: every ``se_`` table (``tables``), the
plumbing of a database (``database``), writing and reading se-search's tables (``store``),
the frozen records it reads back (``rows``: a candidate, a seed's training, a
verification), a study read back (``results``), what optuna-dashboard shows
(``trial_records``), and where checkpoints and artifacts go (``artifacts``).
"""
