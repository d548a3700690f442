"""Benchmarks that answer "how fast, how much memory": a training step against TRL's SFTTrainer, constrained beam
search, the catalogue trie, the collaborative reward model. Each runs with `python -m benchmarks.speed.<name>`."""
