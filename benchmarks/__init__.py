"""Benchmarks: run as scripts or `python -m benchmarks.<name>` from the repo root."""
