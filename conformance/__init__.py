"""Hypothesis-driven differential conformance testing of multi-LoRA backends."""
