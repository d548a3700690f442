"""Benchmarks of ilrec-trl, grouped by the question they answer: `speed` (step time, memory, beam search), `accuracy`
(does ILRec beat SFT and DPO), `scale` and `device` (the offline GPU kit). Each one uses the package through its public
API and runs with `python -m benchmarks.<group>.<name>` from the repository root; results and their index are in
benchmarks/results/ (README.md)."""
