"""Synthetic data for tests, benchmarks and the demo: tiny real video clips with planted
events, synthetic features and releases, and the demo run. No production module imports
this room (an import-linter contract in pyproject.toml); only the CLI's `synth` and
`demo` commands do."""
