"""The pytest-benchmark suite: ``pytest --pyargs conformance.bench.gates [--benchmark-...]``."""
