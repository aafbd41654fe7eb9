"""The pytest-benchmark suite: ``pytest --pyargs conformance.benchsuite [--benchmark-...]``."""
