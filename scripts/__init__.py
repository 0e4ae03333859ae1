"""The benchmarks and the reference comparisons, run from the repository root as
`python -m scripts.<name>` (e.g. `python -m scripts.bench_sag --quick`); `bash scripts/bench.sh`
runs every benchmark. Shared helpers live in `scripts.common`; each other module is one entry
point with a `main(argv)`. The `_*_torch_oracle.py` files run inside the PyTorch environment
(`bash scripts/torch_env.sh`) as plain files and import nothing from here."""
