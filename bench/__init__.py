"""Benchmarks (not tests): each module ``bench/<name>.py`` exposes ``main() -> None`` and prints ratios.

Run all with ``python -m bench``, one with ``python -m bench <name>``. Figures are recorded in BENCHMARKS.md.
"""
