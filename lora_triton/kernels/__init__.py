"""Triton kernels, one file per operation: a private ``@triton.jit`` kernel and its launcher."""
