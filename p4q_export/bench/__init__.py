"""Benchmarks: timing, device probes (CPU, Jetson), tegrastats, remote runs over SSH, reports."""
