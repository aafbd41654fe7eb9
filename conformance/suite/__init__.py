"""The conformance suite as pytest tests: ``pytest --pyargs conformance.suite --lora-backend NAME``."""
