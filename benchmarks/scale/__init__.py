"""Scale benchmark: the CPU time and peak memory of every stage a user runs, against catalogue size (10^4 to 10^6
items, 10 interactions per item), on a seeded synthetic log. Run with `python -m benchmarks.scale` (see
`__main__.py`); uses the library's public API only."""
