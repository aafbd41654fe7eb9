"""GPU benchmarks: workloads from real models, honest device timing, bytes and FLOPs accounting."""
