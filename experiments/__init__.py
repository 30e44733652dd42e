"""Scripts that reproduce the paper's tables (run from the repository root as `python -m experiments.<name>`)."""
