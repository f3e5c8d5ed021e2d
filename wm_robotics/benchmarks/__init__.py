"""Speed benchmarks run by ``scripts/benchmark.py``: each figure beside its reference, same run."""
