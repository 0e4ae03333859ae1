"""Small model zoos for tests and benchmarks."""
