"""The conformance suite as pytest tests.

Run: ``pytest --pyargs conformance.suite --lora-backend NAME``.
"""
