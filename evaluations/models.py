"""Models arrive with the evaluations issue."""
