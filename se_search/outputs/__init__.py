"""What a finished search gives its user: the Pareto front and its picks, exported model
files, stand-alone verification, the HTML report, optuna-dashboard, and what the terminal
shows (progress and tables)."""
