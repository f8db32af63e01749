"""Benchmark commands (``hqstream bench ...``); figures go to docs/benchmarks.md."""
