"""A backend module that raises while it is imported."""

raise RuntimeError("CUDA driver too old")
