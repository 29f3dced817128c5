"""Sweeps: a problem set run over strategies, budgets and seeds, every run a stored session,
and the report of accuracy against test-time compute.

  problems.py      JSONL problem sets (GSM8K's fields as they are)
  spec.py          configurations (strategy x n), seeds, the sweep's identity key, RunTask
  runner.py        one run on a llama.cpp context -> RunResult (events + figures)
  results.py       RunResult, what a worker sends back (no llama.cpp import)
  pool.py          executors on this machine: in this process, or W worker processes
  calibrate.py     the default W, measured once per machine, model and width
  ray_backend.py   the executor on a Ray cluster: one actor per worker
  plan.py          the sweep in the database: plan, runs done/missing, resume after kill -9
  driver.py        the coordinator: claim, reconcile, run what is missing, record, progress
  stats.py         pass@k (Chen et al. 2021), bootstrap interval, compute frontier
  report.py        sweep_report(store, id): per (strategy, n) figures for CLI and window
  bench.py         `thoughtscope bench --sweep`: default W against one process, report time

Modules are imported where used (`from engine.sweep.report import sweep_report`): a report
needs no llama.cpp, and the Ray backend imports Ray only when asked for.
"""
