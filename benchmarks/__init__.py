"""Side-by-side timings of medrobust pieces; results go to ``docs/benchmarks/`` (``python -m benchmarks.run_all``).

A regular package (not a namespace package) on purpose: Opacus installs a top-level ``benchmarks``
package into site-packages, which would otherwise shadow this folder for ``python -m benchmarks.<name>``.
"""
