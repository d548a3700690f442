"""Benchmarks of ilrec-trl: each consumes the library through its public API (run with `python -m benchmarks.<name>`
from the repository root)."""
