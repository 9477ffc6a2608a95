"""Bench imaging for the contract suite (it lives in :mod:`whih_control.bench`)."""

from whih_control.bench import BenchImaging, bench_robot

__all__ = ["BenchImaging", "bench_robot"]
