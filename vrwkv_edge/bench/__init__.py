"""Benchmarks: the harness (``harness``), one-measurement worker processes (``worker``), the suites behind
``vrwkv-edge bench`` (``suites``; the vision tower and time-to-first-token suites in ``vision``) and their
plots (``plots``)."""
from .harness import (Timing, machine_info, markdown_table, measure_bandwidth_gbs, peak_rss_bytes, release_memory,
                      reset_peak_rss, rss_bytes, time_fn, weight_bytes_per_token, write_json)
from .suites import add_bench_cli

__all__ = ["Timing", "add_bench_cli", "machine_info", "markdown_table", "measure_bandwidth_gbs", "peak_rss_bytes",
           "release_memory", "reset_peak_rss", "rss_bytes", "time_fn", "weight_bytes_per_token", "write_json"]

