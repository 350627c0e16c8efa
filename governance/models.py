"""Models arrive with the governance issue."""
