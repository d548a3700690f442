"""Command-line entry points: `ilrec-train` and `ilrec-eval`."""
