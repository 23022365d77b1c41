"""`python -m lab report [DIR]`: report.md + summary.csv + charts/*.svg for a sweep folder."""
import csv
import os
import sys

from analysis import verdicts
from lab import sweep as sweepmod
from lab.outpaths import OutputPathError, ensure_output_dir, ensure_output_file


def register(subparsers):
    p = subparsers.add_parser(
        "report", help="statistics, verdicts and charts for a sweep",
        description="Write report.md (machine, grid, verdicts on the targets throughput ratio >= 2 and "
                    "P95 ratio <= 0.6 with 95% intervals, per-axis tables), summary.csv (aggregates) and "
                    "charts/*.svg for a sweep folder. A configuration whose engine completes a smaller share "
                    "of its submissions than the baseline is 'not comparable', never met. Exit 0 when "
                    "written, 2 when DIR is not a sweep or the report cannot be written where asked.")
    p.add_argument("dir", nargs="?", metavar="DIR",
                   help="sweep folder (default: the newest one under data/sweeps/)")
    p.add_argument("--out", metavar="FILE",
                   help="report file (default: DIR/report.md); summary.csv and charts/ go next to it")
    p.set_defaults(func=run_command)


def newest_sweep(root=sweepmod.DEFAULT_SWEEPS):
    """The sweep folder under root whose sweep.json or trials.csv changed last, or None."""
    best, best_time = None, None
    try:
        names = os.listdir(root)
    except OSError:
        return None
    for name in names:
        folder = os.path.join(root, name)
        times = [os.path.getmtime(os.path.join(folder, f)) for f in ("sweep.json", "trials.csv")
                 if os.path.isfile(os.path.join(folder, f))]
        if os.path.isfile(os.path.join(folder, "sweep.json")) and (best_time is None or max(times) > best_time):
            best, best_time = folder, max(times)
    return best


def refresh_trials_csv(sweep_dir, meta):
    """A sweep killed between writing a trial file and trials.csv leaves the CSV one trial behind:
    rebuild it from trials/*.json when they hold a trial the CSV lacks (or a newer status)."""
    records = sweepmod.load_records(os.path.join(sweep_dir, "trials"))
    if not records:
        return False
    csv_path = os.path.join(sweep_dir, "trials.csv")
    known = {}
    try:
        with open(csv_path, encoding="utf-8", newline="") as f:
            known = {row.get("id"): row.get("status") for row in csv.DictReader(f)}
    except OSError:
        pass
    if all(known.get(rid) == rec.get("status") for rid, rec in records.items()):
        return False
    if not set(known) <= set(records):   # the CSV knows trials whose files are gone: keep it as it is
        return False
    sweepmod.write_text(csv_path, sweepmod.csv_text(list(meta["grid"]["axes"]), records.values()))
    return True


def _bad_report_target(sweep_dir, out):
    """Why `out` cannot take the report (None if it can): a folder, or one of the sweep's own records,
    which the report (and its summary.csv and charts/ beside it) would overwrite."""
    target = os.path.abspath(out)
    if os.path.isdir(target):
        return "is a folder; give a file name such as report.md"
    sweep = os.path.abspath(sweep_dir)
    folder = os.path.dirname(target)
    own = {os.path.join(sweep, name) for name in ("sweep.json", "trials.csv", ".lock")}
    if target in own or target.startswith(os.path.join(sweep, "trials") + os.sep):
        return "would overwrite the sweep's own records"
    if folder == sweep and os.path.basename(target) != "report.md" and os.path.splitext(target)[1] != ".md":
        return "inside the sweep folder, only a .md file"
    return None


def run_command(args):
    from analysis import report as reportmod  # here, not at import: `python -m lab` starts faster
    sweep_dir = args.dir
    if sweep_dir is None:
        sweep_dir = newest_sweep()
        if sweep_dir is None:
            print(f"error: no sweep found under {sweepmod.DEFAULT_SWEEPS}; run `python -m lab sweep GRID` "
                  f"first or name a DIR", file=sys.stderr)
            return 2
    if not os.path.isdir(sweep_dir):
        what = "is not a folder (a sweep's folder holds its sweep.json)" if os.path.lexists(sweep_dir) else \
            "no such folder"
        print(f"error: {sweep_dir}: {what}", file=sys.stderr)
        return 2
    if args.out is not None:
        problem = _bad_report_target(sweep_dir, args.out)
        if problem:
            print(f"error: --out {args.out}: {problem}", file=sys.stderr)
            return 2
    if not os.path.isfile(os.path.join(sweep_dir, "sweep.json")):
        print(f"error: {sweep_dir}: no sweep.json (not a sweep folder)", file=sys.stderr)
        return 2
    try:    # before any work: the report, summary.csv and charts/ must be writable where they go
        target = ensure_output_file(args.out if args.out is not None else os.path.join(sweep_dir, "report.md"),
                                    what="--out" if args.out is not None else "report")
        ensure_output_dir(os.path.join(os.path.dirname(target), "charts"), what="charts folder")
    except OutputPathError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        meta = reportmod.load_meta(sweep_dir)     # the rows are read once, by write_report
        if refresh_trials_csv(sweep_dir, meta):
            print(f"note: rebuilt {os.path.join(sweep_dir, 'trials.csv')} from trials/*.json", file=sys.stderr)
        out = reportmod.write_report(sweep_dir, args.out)
    except reportmod.ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write the report: {exc}", file=sys.stderr)
        return 1
    agg = out["aggregate"]
    if agg["recorded"] < agg["planned"]:
        print(f"incomplete sweep: {agg['recorded']} of {agg['planned']} planned trials have run", file=sys.stderr)
    for t in verdicts.TARGETS:
        counts = reportmod.tally(agg, t["key"])
        print(f"{t['label']} {t['direction']} {t['target']:g}: "
              + (", ".join(f"{counts[v]} {v}" for v in verdicts.VERDICTS if counts.get(v)) or "no trials yet"),
              file=sys.stderr)
    print(f"report: {out['report']} (summary {out['summary']}, {len(out['charts'])} charts)", file=sys.stderr)
    print(out["report"])
    return 0
