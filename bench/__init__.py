"""Benchmark scripts: each prints a table, and with `--json` a list of cases."""
