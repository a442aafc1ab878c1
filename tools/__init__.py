"""maas tools: export, examples, benchmarks and the `maas` command line."""
