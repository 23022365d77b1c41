"""The contract every part of Task Queue Lab relies on, owned in one place (standard library only).

- `tqcontract.metrics`: the metrics JSON (its shape, counter names, implementation names), the one
  percentile definition, the latency summary and the CSV columns of a trial.
- `tqcontract.environment`: where a figure was measured (interpreter, machine, CPUs) and the process's
  memory and CPU readings.
- `tqcontract.files`: result files written atomically (a temporary file, then a rename).

It sits at the bottom: the engine, the baseline harness, the lab and the analysis import it; it imports
nothing of them. See docs/ARCHITECTURE.md.
"""
