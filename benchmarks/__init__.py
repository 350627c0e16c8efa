"""Speed and memory benchmarks (``make bench``); never timed assertions in the test suite.

Each module here defines ``run(args) -> dict`` returning its figures; ``python -m
benchmarks [name ...]`` runs them against the configured database (use
PostgreSQL for the figures quoted in notes) and prints a JSON line per module.
"""
