"""Turn a sweep folder into report.md, summary.csv and charts/*.svg (standard library only).

Input: <sweep>/sweep.json (grid, machine, interpreter), <sweep>/trials.csv (one row per trial: every number
behind an interval or a verdict comes from this file, so anyone can recompute them) and
<sweep>/trials/<id>.json (each trial's latency histogram, pooled per cell for percentiles over all its
tasks, and the stderr tail of failed trials). The verdict rule is analysis.verdicts; which trials count
is analysis.trials; the charts are analysis.charts.

Why one module of ~700 lines: it renders one document (report.md) and the two files that go with it
(summary.csv, the charts' list) from one aggregate; the statistics are in stats.py and verdicts.py, which
trials count in trials.py, the charts in charts.py and svg.py.
"""
import csv
import io
import json
import math
import os
import re
import statistics
from datetime import UTC, datetime

from analysis import charts as chartsmod
from analysis import stats, trials, verdicts
from analysis.charts import axis_values, describe_config
from analysis.verdicts import TARGETS, direction_symbol
from tqcontract.environment import REFERENCE_LOOP
from tqcontract.files import write_text
from tqcontract.histogram import LatencyHistogram
from tqcontract.metrics import BASELINE, ENGINE, canonical_impl, dig

NOISE_CV = verdicts.NOISE_CV
DETAIL_METRICS = trials.REQUIRED_METRICS      # every figure a cell's statistics are computed from
MEAN_METRICS = ("efficiency", "peak_rss_mb", "rejected", "retried", "dead_lettered", "wall_s", "cpu_ms_per_task",
                "ctx_voluntary", "ctx_involuntary", "load1_before")
NOISE_METRICS = (("throughput_tps", "throughput"), ("latency_p95_ms", "P95"))
POOLED = ("p50", "p95", "p99")
# the grid file may call an axis by another name (lab.grid.ALIASES); the report says the parameter's name
AXIS_ALIASES = {"transient_rate": "error_rate"}


class ReportError(Exception):
    """A folder that cannot be reported on; str(error) is the one line to print."""


build_charts = chartsmod.build_charts


# --------------------------------------------------------------------------------------------- input

def _parse_value(text):
    if text is None or text == "":
        return None
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def _num(text):
    v = trials.parse_number(text)
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _read_trial_file(sweep_dir, trial_id):
    path = os.path.join(sweep_dir, "trials", f"{trial_id}.json")
    try:
        with open(path, encoding="utf-8") as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def _tail_of(rec):
    tail = rec.get("stderr_tail")
    last = [line.strip() for line in (tail if isinstance(tail, str) else "").splitlines()
            if line.strip() and not line.startswith("[killed with its process group")]
    return last[-1][:160] if last else ""


_META_OBJECTS = ("machine", "trial_python", "sweep_python", "scratch", "adaptive")


def _grid_problem(grid):
    """True when sweep.json's grid is not one the report can read (a damaged or hand-edited file)."""
    if not (isinstance(grid, dict) and isinstance(grid.get("axes"), dict) and isinstance(grid.get("fixed"), dict)):
        return True
    if not all(isinstance(values, list) for values in grid["axes"].values()):
        return True
    impls = grid.get("implementations", [])
    if not (isinstance(impls, list) and all(isinstance(i, str) for i in impls)):
        return True
    repeats, timeout = grid.get("repeats", 1), grid.get("timeout_s", 1)
    return not (isinstance(repeats, int) and not isinstance(repeats, bool) and repeats >= 1
                and isinstance(timeout, (int, float)) and not isinstance(timeout, bool))


def load_meta(sweep_dir):
    """The sweep's description (sweep.json), implementations in today's names; ReportError when it is not one."""
    meta_path = os.path.join(sweep_dir, "sweep.json")
    if not os.path.isfile(meta_path):
        raise ReportError(f"{sweep_dir}: no sweep.json (not a sweep folder)")
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        if not isinstance(meta, dict) or _grid_problem(meta["grid"]):
            raise TypeError("not a grid")
    except (OSError, ValueError, KeyError, TypeError):
        raise ReportError(f"{meta_path}: unreadable or not a sweep description") from None
    for key in _META_OBJECTS:       # what was recorded of the machine etc.: a damaged one reads as not recorded
        if not isinstance(meta.get(key, {}), dict):
            meta[key] = {}
    grid = meta["grid"]
    # trial files written before the engine was called `engine` name it `optimized`: read it as today
    grid["implementations"] = [canonical_impl(i) for i in grid.get("implementations", [BASELINE, ENGINE])]
    return meta


def load_sweep(sweep_dir):
    """(meta, rows) of a sweep folder; ReportError when it is not one.

    Every row gets `impl` in today's name; an ok row whose metrics are missing or not finite becomes
    status `invalid` with `reason`; ok rows get `_histogram` (a LatencyHistogram from its trial file, or
    None), failed rows `_tail` (the last stderr line of its trial file)."""
    meta = load_meta(sweep_dir)
    csv_path = os.path.join(sweep_dir, "trials.csv")
    if not os.path.isfile(csv_path):
        raise ReportError(f"{sweep_dir}: no trials.csv")
    try:
        with open(csv_path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error) as exc:
        raise ReportError(f"{csv_path}: unreadable ({exc})") from None
    for row in rows:
        row["impl"] = canonical_impl(row.get("impl", ""))
        if row.get("status") == "ok":
            why = trials.row_problem(row)
            if why:
                row["status"], row["reason"] = trials.INVALID, why
        rec = _read_trial_file(sweep_dir, row.get("id"))
        if row.get("status") == "ok":
            row["_histogram"] = None
            data = dig(rec, ("result", "latency_histogram"))
            if data is not None:
                try:
                    row["_histogram"] = LatencyHistogram.from_dict(data)
                except ValueError:
                    pass
        elif rec is not None:
            row["_tail"] = _tail_of(rec)
    return meta, rows


# ----------------------------------------------------------------------------------------- aggregate

def planned_trials(meta):
    """Trials the sweep meant to run: sweep.json's count (base rounds + adaptive rounds scheduled), or
    configurations x implementations x repeats of its grid."""
    planned = meta.get("planned_trials")
    if isinstance(planned, int):
        return planned
    grid = meta["grid"]
    n = 1
    for values in grid["axes"].values():
        n *= len(values)
    return n * len(grid.get("implementations", [])) * int(grid.get("repeats") or 1)


def _all_or_none(rows, metric):
    """Mean of a metric over the rows when every row has it, else None (n shown = n used)."""
    vals = [_num(r.get(metric)) for r in rows]
    if not vals or any(v is None for v in vals):
        return None
    return statistics.fmean(vals)


def _pooled(rows):
    h = LatencyHistogram.pooled(r.get("_histogram") for r in rows)
    if h is None:
        return None
    return {"tasks": h.count, "p50": h.percentile(50), "p95": h.percentile(95), "p99": h.percentile(99),
            "mean": h.mean, "max": h.max}


def _trial_values(rows):
    return [{m: _num(r.get(m)) for m in DETAIL_METRICS} for r in rows]


def aggregate(meta, rows):
    """Per configuration: axis values, per-implementation statistics, the comparison under the verdict rule.

    Returns {"configs": [config dicts in grid order], "counts": {status: n}, "failed_rows": [...], "best":
    config or None, "planned": int, "recorded": int, "configs_planned": int, "halfwidth": float or None}."""
    grid = meta["grid"]
    axes = list(grid["axes"])
    by_config, counts, failed_rows, codes = {}, {}, [], {}
    for row in rows:
        status = row.get("status", "")
        counts[status] = counts.get(status, 0) + 1
        if status == "ok":      # which code measured it, and where (trials.csv; absent in sweeps before them)
            code = (row.get("git_commit") or None, row.get("measured_on") or None)
            codes[code] = codes.get(code, 0) + 1
        cid = row.get("config_id", "")
        cfg = by_config.setdefault(cid, {"config_id": cid,
                                         "config": {a: _parse_value(row.get(a)) for a in axes},
                                         "rows": {}, "failed": {}})
        impl = row.get("impl", "")
        if status == "ok":
            cfg["rows"].setdefault(impl, []).append(row)
        else:
            cfg["failed"][impl] = cfg["failed"].get(impl, 0) + 1
            failed_rows.append(row)

    def order_key(cfg):
        key = []
        for a in axes:
            values = grid["axes"][a]
            v = cfg["config"].get(a)
            key.append(values.index(v) if v in values else len(values))
        return key

    halfwidth = (meta.get("adaptive") or {}).get("target_halfwidth")
    configs = sorted(by_config.values(), key=order_key)
    for cfg in configs:
        cfg["cells"] = {}
        for impl in grid.get("implementations", [BASELINE, ENGINE]):
            impl_rows = cfg["rows"].get(impl, [])
            cell = {"impl": impl, "n": len(impl_rows), "n_failed": cfg["failed"].get(impl, 0)}
            for m in DETAIL_METRICS:
                cell[m] = stats.describe([_num(r.get(m)) for r in impl_rows])
            for m in MEAN_METRICS:
                cell[m] = _all_or_none(impl_rows, m)
            cell["pooled"] = _pooled(impl_rows)
            cell["noisy"] = [label for m, label in NOISE_METRICS
                             if cell[m]["cv"] is not None and cell[m]["cv"] > NOISE_CV]
            cfg["cells"][impl] = cell
        comparison = verdicts.compare(_trial_values(cfg["rows"].get(ENGINE, [])),
                                      _trial_values(cfg["rows"].get(BASELINE, [])))
        cfg["completion"] = comparison["completion"]
        cfg["ratios"] = {t["key"]: comparison[t["key"]] for t in TARGETS}
        pe, pb = (cfg["cells"].get(i, {}).get("pooled") for i in (ENGINE, BASELINE))
        cfg["pooled_p95_ratio"] = pe["p95"] / pb["p95"] if pe and pb and pb["p95"] else None
        cfg["halfwidth_reached"] = None if halfwidth is None else all(
            verdicts.within_halfwidth(cfg["ratios"][t["key"]], halfwidth) for t in TARGETS)
    engine_cells = [c for c in configs if c["cells"].get(ENGINE, {}).get("throughput_tps", {}).get("mean")
                    is not None]
    comparable = [c for c in engine_cells if c["completion"]["comparable"]] or engine_cells
    best = max(comparable, key=lambda c: c["cells"][ENGINE]["throughput_tps"]["mean"]) if comparable else None
    configs_planned = 1
    for values in grid["axes"].values():
        configs_planned *= len(values)
    return {"configs": configs, "counts": counts, "failed_rows": failed_rows, "best": best,
            "planned": planned_trials(meta), "recorded": len(rows), "configs_planned": configs_planned,
            "halfwidth": halfwidth, "codes": codes}


def tally(agg, key):
    """{verdict: number of configurations} for one target."""
    out = {}
    for cfg in agg["configs"]:
        v = cfg["ratios"][key]["verdict"]
        out[v] = out.get(v, 0) + 1
    return out


# ------------------------------------------------------------------------------------------ format

fmt = verdicts.fmt_number


def fmt_ci(low, high, digits=3):
    if low is None or high is None:
        return "–"
    return f"[{fmt(low, digits)}, {fmt(high, digits)}]"


def fmt_pct(v):
    return "–" if v is None else f"{100 * v:.1f}%"


def fmt_share(v):
    """A share with enough digits that a small non-zero one does not read as 0."""
    if v is None:
        return "–"
    if v == 0:
        return "0%"
    p = 100 * v
    return f"{p:.1f}%" if abs(p) >= 1 else f"{p:.2g}%"


def md_table(header, rows):
    def cell(x):
        return str(x).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


def _verdict_cell(r):
    v = r["verdict"]
    return f"**{v}**" if v == verdicts.MET else v


def _target_text(t):
    return f"{t['label']} {direction_symbol(t['direction'])} {t['target']:g}"


# ------------------------------------------------------------------------------------------ output

def summary_csv(meta, agg):
    grid = meta["grid"]
    axes = list(grid["axes"])
    header = ["config_id"] + axes + ["impl", "n", "n_failed"]
    for m in DETAIL_METRICS:
        header += [f"{m}_{s}" for s in ("mean", "stdev", "median", "cv", "ci_low", "ci_high")]
    header += [f"{m}_mean" for m in MEAN_METRICS]
    header += ["pooled_tasks"] + [f"pooled_{q}_ms" for q in POOLED]
    header += ["completion_engine_share", "completion_baseline_share", "completion_diff", "completion_diff_low",
               "completion_diff_high", "comparable"]
    for t in TARGETS:
        k = t["key"]
        header += [f"{k}_ratio", f"{k}_ratio_ci_low", f"{k}_ratio_ci_high", f"{k}_ratio_df", f"{k}_verdict",
                   f"{k}_note"]
    header += ["pooled_p95_ratio", "halfwidth_reached", "noisy"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)

    def val(v):
        if v is None:
            return ""
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float):
            return repr(v) if math.isfinite(v) else ("inf" if v > 0 else "-inf")
        return str(v)

    for cfg in agg["configs"]:
        for impl, cell in cfg["cells"].items():
            row = [cfg["config_id"]] + [val(cfg["config"].get(a)) for a in axes] + [impl, cell["n"],
                                                                                   cell["n_failed"]]
            for m in DETAIL_METRICS:
                d = cell[m]
                row += [val(d[s]) for s in ("mean", "stdev", "median", "cv", "ci_low", "ci_high")]
            row += [val(cell[m]) for m in MEAN_METRICS]
            pooled = cell["pooled"] or {}
            row += [val(pooled.get("tasks"))] + [val(pooled.get(q)) for q in POOLED]
            if impl == ENGINE:
                c = cfg["completion"]
                row += [val(c["engine_share"]), val(c["baseline_share"]), val(c["diff"]), val(c["low"]),
                        val(c["high"]), val(c["comparable"])]
                for t in TARGETS:
                    r = cfg["ratios"][t["key"]]
                    row += [val(r["ratio"]), val(r["low"]), val(r["high"]), val(r["df"]), r["verdict"],
                            verdicts.full_note(r)]
                row += [val(cfg["pooled_p95_ratio"]), val(cfg["halfwidth_reached"])]
            else:
                row += [""] * (6 + 6 * len(TARGETS) + 2)
            row.append(";".join(cell["noisy"]))
            w.writerow(row)
    return buf.getvalue()


def _alias_note(grid):
    names = grid.get("axis_names", {})
    said = [f"`{param}` (the grid file's `{alias}`)" for param, alias in AXIS_ALIASES.items()
            if param in grid["axes"] and names.get(param, alias) == alias]
    return said


def _header_lines(meta, agg, sweep_dir):
    grid = meta["grid"]
    total, ok = agg["recorded"], agg["counts"].get("ok", 0)
    failed_desc = ", ".join(f"{n} {s}" for s, n in sorted(agg["counts"].items()) if s != "ok") or "none failed"
    lines = [f"# Sweep report: {grid.get('name', '(unnamed)')}", ""]
    if grid.get("description"):
        lines += [grid["description"], ""]
    lines += [f"- Sweep folder: `{sweep_dir}`",
              f"- Trials: {total} of {agg['planned']} planned have run ({ok} ok; {failed_desc})"]
    if total < agg["planned"]:
        missing_cfgs = agg["configs_planned"] - len(agg["configs"])
        lines.append(f"- **Incomplete sweep**: {agg['planned'] - total} of {agg['planned']} planned trials never "
                     f"ran" + (f" ({missing_cfgs} of {agg['configs_planned']} configurations have no trial at "
                               f"all)" if missing_cfgs > 0 else "")
                     + "; the sweep was stopped or is still running (the same sweep command resumes it). "
                       "Every figure below covers only the trials that ran.")
    codes = agg.get("codes") or {}
    if len(codes) > 1:      # a resumed sweep kept trials other code (or another machine) measured: say so
        listing = "; ".join(f"`{code or 'unknown'}` on {setup or 'an unrecorded machine'} ({n} trial"
                            f"{'s' if n != 1 else ''})" for (code, setup), n in
                            sorted(codes.items(), key=lambda item: (-item[1], item[0][0] or "", item[0][1] or "")))
        code_line = (f"- **Trials measured with different code or on different machines**: {listing} "
                     f"(`-dirty.<digest>`: uncommitted changes, told apart by their digest). A resumed sweep keeps "
                     f"the trials already ok, so the figures below pool them; `python -m lab sweep GRID --out DIR` "
                     f"measures one version alone")
    else:
        code_line = (f"- Git commit: `{meta.get('git_commit') or 'unknown'}`"
                     + (" (uncommitted changes)" if meta.get("git_dirty") else ""))
    lines += [f"- Sweep started: {meta.get('started_at', '?')}; last run finished: "
              f"{meta.get('finished_at', 'not finished')}",
              code_line,
              f"- Report generated: {datetime.now(UTC).isoformat(timespec='seconds')}", ""]
    return lines


def _speed_line(ms):
    if not isinstance(ms, (int, float)) or isinstance(ms, bool) or not math.isfinite(ms):
        return "- Single-core speed: not recorded"
    return (f"- Single-core speed: `{REFERENCE_LOOP}` in {ms:g} ms (best of 3, pure Python; lower is faster). "
            f"The engine's CPU per task scales with it; the baseline's rate, bound by its one lock around the "
            f"service time, does not: compare reports from different machines with it in mind")


def _machine_lines(meta, rows):
    grid = meta["grid"]
    machine = meta.get("machine", {})
    tpy, spy = meta.get("trial_python", {}), meta.get("sweep_python", {})
    load = machine.get("load_average")
    loads = [_num(r.get("load1_before")) for r in rows if _num(r.get("load1_before")) is not None]
    mem = machine.get("memory_total_mb")
    lines = ["## Machine and interpreter", "",
             f"- Platform: {machine.get('platform', '?')} ({machine.get('machine', '?')})",
             f"- CPU: {machine.get('cpu_model') or 'model not recorded'}; {machine.get('cpu_count', '?')} CPUs "
             f"(usable by this process: {machine.get('cpu_usable', '?')})",
             f"- Memory: {f'{mem / 1024:.1f} GiB' if isinstance(mem, (int, float)) else 'not recorded'}",
             _speed_line(machine.get("cpu_reference_ms")),
             f"- Load average at the sweep's start (1, 5, 15 min): "
             f"{', '.join(str(x) for x in load) if load else 'not recorded'}"
             + (f"; 1-minute load before each trial: {min(loads):g} to {max(loads):g} (median "
                f"{statistics.median(loads):g}; trials.csv `load1_before`, `load1_after`)" if loads else ""),
             f"- Trial interpreter: {tpy.get('implementation', '?')} {tpy.get('python_version', '?')} "
             f"(`{tpy.get('executable', '?')}`, GIL {'on' if tpy.get('gil_enabled', True) else 'off'})",
             f"- Sweep interpreter: {spy.get('implementation', '?')} {spy.get('python_version', '?')}",
             f"- Each trial ran alone, in its own process (`python -m {meta.get('trial_module', 'runners.trial')}`)"
             f" with the environment recorded in sweep.json; timeout {grid.get('timeout_s')} s per trial.",
             f"- Scratch files (source objects, outputs, SQLite) on: "
             f"{(meta.get('scratch') or {}).get('filesystem') or 'unknown'} "
             f"(`{(meta.get('scratch') or {}).get('path', '?')}`; TQ_SCRATCH_DIR chooses)", ""]
    return lines


def _method_lines(meta):
    return [
        "## Method", "",
        "- Per configuration and implementation: n = the ok trials used for every figure of that cell, mean, "
        "sample stdev, median, and the 95% interval of the mean from Student's t (quantile computed exactly "
        "from the incomplete beta function). CV = stdev / mean; a cell with CV > 10% is flagged noisy. A cell "
        "whose trials all gave the same value has no interval (there is no spread to estimate it from); a "
        "mean of 0 is a measured 0.",
        "- A trial counts when it finished (`ok`) and every metric the statistics use is a finite number; one "
        "with a missing or NaN/inf metric is listed with the failed trials as `invalid`, with the reason.",
        f"- **Verdict rule** (`analysis/verdicts.py`, the same in benchmark.py): {verdicts.RULE_TEXT}",
        "- Ratios are engine mean / baseline mean of the same configuration, from trials run back to back. "
        "Their interval is Fieller's (the ratios R for which mean_engine − R·mean_baseline is within t·SE of 0, "
        "Welch degrees of freedom): exact under normal noise, wide when repeats are few, unbounded when the "
        "baseline's mean is not distinguishable from 0. Every interval method printed here has a coverage "
        "simulation in `tests/test_stats.py` (n = 3: 93-97%). There is no bootstrap cross-check: with 3 "
        "trials a percentile bootstrap covers the truth about 80% of the time.",
        "- **Which P95**: the P95 ratio and its verdict compare the mean over trials of each trial's P95 (the "
        "P95 of one run of `count` tasks, over the tasks that got a final answer). The columns *pooled "
        "P50/P95/P99* are percentiles over all tasks of a cell: the trials' latency histograms "
        "(`tqcontract/histogram.py`, fixed log-linear buckets, within 1% of the exact value) merged. The two "
        "differ by the small-sample bias of a percentile (for 300-task trials about 1% for P95, more for P99).",
        "- The baseline does not retry: each injected transient fault fails its task, so its error rate is "
        "about the transient rate; the engine retries transient faults up to its attempt budget. The baseline "
        "has no queue size or mode: it still runs in every configuration, so the two sides of each ratio are "
        "measured back to back under the same conditions.",
        "- Efficiency (eff.) = throughput / ceiling, the mean over a cell's ok trials. The ceiling is "
        "workers × 1000 / service time (`latency_ms`; over HTTP at least two requests' server latency), the "
        "same for both implementations. The baseline's global lock runs one task at a time, so it can reach "
        "at most 1 / workers of it.",
        "- CPU ms/task: user + system CPU time of the trial process from the implementation's start to its "
        "stop (getrusage, all threads; an HTTP object server's own process is not included), over the "
        "tasks submitted; trials.csv also has the context switches (`ctx_voluntary`, `ctx_involuntary`).",
        "- Recompute: in trials.csv take the rows with status `ok`, group by `config_id` and `impl`, and use "
        "the columns `throughput_tps`, `latency_p95_ms` and `error_rate`.", ""]


def _summary_lines(agg, configs):
    lines = ["## Summary", ""]
    for t in TARGETS:
        counts = tally(agg, t["key"])
        parts = [f"{counts.get(v, 0)} {v}" for v in (verdicts.MET, verdicts.NOT_MET, verdicts.INCONCLUSIVE,
                                                      verdicts.NOT_COMPARABLE)]
        if counts.get(verdicts.NO_DATA):
            parts.append(f"{counts[verdicts.NO_DATA]} without data")
        lines.append(f"- Target {_target_text(t)}: {', '.join(parts)} of {len(configs)} configurations"
                     + (f" ({agg['configs_planned']} in the grid)" if agg["configs_planned"] != len(configs)
                        else "") + ".")
    not_comparable = [c for c in configs if c["completion"]["comparable"] is False]
    if not_comparable:
        lines.append(f"- Not comparable (the engine's non-success share is worse than the baseline's): "
                     f"{len(not_comparable)}: " + "; ".join(
                         f"{describe_config(c['config'])}: engine {fmt_share(c['completion']['engine_share'])} "
                         f"vs baseline {fmt_share(c['completion']['baseline_share'])}" for c in not_comparable[:8])
                     + (" …" if len(not_comparable) > 8 else "."))
    best = agg["best"]
    if best is not None:
        cell = best["cells"][ENGINE]["throughput_tps"]
        r, rp = best["ratios"]["throughput"], best["ratios"]["p95"]
        lines.append(f"- Best comparable configuration by engine throughput: {describe_config(best['config'])}: "
                     f"{fmt(cell['mean'])} tasks/s (95% CI {fmt_ci(cell['ci_low'], cell['ci_high'])}, "
                     f"n={cell['n']}); throughput ratio {fmt(r['ratio'])} {fmt_ci(r['low'], r['high'])} "
                     f"({r['verdict']}), P95 ratio {fmt(rp['ratio'])} {fmt_ci(rp['low'], rp['high'])} "
                     f"({rp['verdict']}). The charts' other axes are held at this configuration.")
        steady = [c for c in configs if c["completion"]["comparable"]
                  and c["cells"].get(ENGINE, {}).get("throughput_tps", {}).get("ci_low") is not None]
        if steady:
            robust = max(steady, key=lambda c: c["cells"][ENGINE]["throughput_tps"]["ci_low"])
            if robust is not best:
                rc = robust["cells"][ENGINE]["throughput_tps"]
                lines.append(f"- Best by the low end of the engine's 95% interval (a maximum of noisy means "
                             f"favours a lucky cell): {describe_config(robust['config'])}: "
                             f"{fmt(rc['mean'])} tasks/s {fmt_ci(rc['ci_low'], rc['ci_high'])}; throughput "
                             f"ratio {fmt(robust['ratios']['throughput']['ratio'])} "
                             f"({robust['ratios']['throughput']['verdict']}), P95 ratio "
                             f"{fmt(robust['ratios']['p95']['ratio'])} ({robust['ratios']['p95']['verdict']}).")
    else:
        lines.append("- No ok engine trials: no best configuration.")
    noisy = [(cfg, impl, cell["noisy"]) for cfg in configs for impl, cell in cfg["cells"].items() if cell["noisy"]]
    if noisy:
        lines.append(f"- Noisy cells (CV > 10%): {len(noisy)}: " + "; ".join(
            f"{impl} {describe_config(cfg['config'])} ({', '.join(n)})" for cfg, impl, n in noisy[:12])
            + (" …" if len(noisy) > 12 else "."))
    else:
        lines.append("- Noisy cells (CV > 10%): none.")
    single_n = sum(1 for cfg in configs for c in cfg["cells"].values() if c["n"] == 1)
    if single_n:
        lines.append(f"- {single_n} cells have a single ok trial: no interval there.")
    flat = sum(1 for cfg in configs for c in cfg["cells"].values()
               for m, _ in NOISE_METRICS if c[m]["note"] == stats.NO_SPREAD)
    if flat:
        lines.append(f"- {flat} cell figures have no spread (every trial gave the same value): no interval there.")
    if agg["halfwidth"] is not None:
        reached = [c for c in configs if c["halfwidth_reached"]]
        missed = [c for c in configs if not c["halfwidth_reached"]]
        lines.append(f"- Target precision ±{100 * agg['halfwidth']:g}% (`--target-halfwidth`): both ratio "
                     f"intervals within it in {len(reached)} of {len(configs)} configurations"
                     + (": not reached in " + "; ".join(
                         f"{describe_config(c['config'])} (n={c['cells'].get(ENGINE, {}).get('n', 0)})"
                         for c in missed[:8]) + (" …" if len(missed) > 8 else "") if missed else "") + ".")
    if agg["failed_rows"]:
        lines.append(f"- Failed trials: {len(agg['failed_rows'])} (see the end of this report); they are left "
                     f"out of every statistic.")
    lines.append("")
    return lines


def _verdict_table(grid, configs, halfwidth):
    axes = list(grid["axes"])
    header = axes + ["n baseline/engine", "error rate baseline/engine"]
    for t in TARGETS:
        header += [f"{t['label']} [95% CI]", f"{direction_symbol(t['direction'])} {t['target']:g}"]
    header += ["pooled P95 ratio"] + (["±" + f"{100 * halfwidth:g}%"] if halfwidth is not None else []) + ["notes"]
    rows = []
    for cfg in configs:
        notes = []
        if cfg["completion"]["comparable"] is False:
            notes.append(cfg["completion"]["note"])
        for t in TARGETS:
            r = cfg["ratios"][t["key"]]
            if r["note"]:
                notes.append(f"{t['label']}: {r['note']}")
        for impl, cell in cfg["cells"].items():
            if cell["noisy"]:
                notes.append(f"{impl} noisy ({', '.join(cell['noisy'])})")
            if cell["n_failed"]:
                notes.append(f"{impl}: {cell['n_failed']} failed")
        cb, ce = (cfg["cells"].get(i, {}) for i in (BASELINE, ENGINE))
        row = [cfg["config"].get(a) for a in axes] + [
            f"{cb.get('n', 0)}/{ce.get('n', 0)}",
            f"{fmt_share(cfg['completion']['baseline_share'])} / {fmt_share(cfg['completion']['engine_share'])}"]
        for t in TARGETS:
            r = cfg["ratios"][t["key"]]
            row += [f"{fmt(r['ratio'])} {fmt_ci(r['low'], r['high'])}", _verdict_cell(r)]
        row.append(fmt(cfg["pooled_p95_ratio"]))
        if halfwidth is not None:
            row.append("reached" if cfg["halfwidth_reached"] else "not reached")
        row.append("; ".join(notes))
        rows.append(row)
    return ["### Verdicts per configuration", "", md_table(header, rows), ""]


def _per_axis_lines(grid, configs):
    lines = ["## Per axis", "",
             "Each row averages the cell means of every configuration with that value (the other axes vary); "
             "ratios are the median over those configurations.", ""]
    for a in grid["axes"]:
        vals = grid["axes"][a]
        if len(vals) < 2:
            lines += [f"- {a}: single value ({vals[0]}) in this grid: no table.", ""]
            continue
        rows = []
        for v in vals:
            group = [c for c in configs if c["config"].get(a) == v]

            def mean_of(impl, metric, group=group):
                ms = [c["cells"].get(impl, {}).get(metric, {}).get("mean") for c in group]
                ms = [m for m in ms if m is not None]
                return statistics.fmean(ms) if ms else None

            def mean_scalar(impl, metric, group=group):
                ms = [c["cells"].get(impl, {}).get(metric) for c in group]
                ms = [m for m in ms if m is not None]
                return statistics.fmean(ms) if ms else None

            def med_ratio(key, group=group):
                rs = [c["ratios"][key]["ratio"] for c in group if c["ratios"][key]["ratio"] is not None]
                return statistics.median(rs) if rs else None

            met = [sum(1 for c in group if c["ratios"][t["key"]]["verdict"] == verdicts.MET) for t in TARGETS]
            nc = sum(1 for c in group if c["completion"]["comparable"] is False)
            rows.append([v, len(group), fmt(mean_of(ENGINE, "throughput_tps")),
                         fmt(mean_of(BASELINE, "throughput_tps")), fmt(med_ratio("throughput")),
                         fmt(mean_scalar(ENGINE, "efficiency")),
                         fmt(mean_of(ENGINE, "latency_p95_ms")), fmt(mean_of(BASELINE, "latency_p95_ms")),
                         fmt(med_ratio("p95")), fmt_share(mean_of(ENGINE, "error_rate")),
                         fmt_share(mean_of(BASELINE, "error_rate")),
                         f"{met[0]}/{len(group)}", f"{met[1]}/{len(group)}", f"{nc}/{len(group)}"])
        lines += [f"### {a}", "",
                  md_table([a, "configs", "engine tasks/s", "baseline tasks/s", "thr. ratio", "engine eff.",
                            "engine P95 ms", "baseline P95 ms", "P95 ratio", "engine error rate",
                            "baseline error rate", "thr. met", "P95 met", "not comparable"], rows), ""]
    return lines


def _modes_lines(grid, agg, configs):
    if not ("mode" in grid["axes"] and len(grid["axes"]["mode"]) > 1):
        return ["## block vs fail_fast (engine)", "",
                f"mode has a single value ({axis_values(grid).get('mode', ['?'])[0]}) in this grid: no "
                f"comparison.", ""]
    modes = grid["axes"]["mode"]
    index = chartsmod.index_of(agg)
    others = [a for a in grid["axes"] if a != "mode"]
    seen, rows = set(), []
    for cfg in configs:
        key = tuple(cfg["config"].get(a) for a in others)
        if key in seen:
            continue
        seen.add(key)
        cells = [chartsmod.lookup(index, grid, cfg["config"], mode=m) for m in modes]
        row = [cfg["config"].get(a) for a in others]
        for metric, f in (("throughput_tps", fmt), ("latency_p95_ms", fmt), ("error_rate", fmt_share)):
            for c in cells:
                d = c["cells"].get(ENGINE, {}).get(metric, {}) if c else {}
                row.append(f(d.get("mean")))
        for c in cells:
            row.append(fmt((c["cells"].get(ENGINE, {}) if c else {}).get("rejected")))
        for c in cells:
            row.append(c["ratios"]["throughput"]["verdict"] if c else "–")
        rows.append(row)
    header = list(others)
    for label in ("tasks/s", "P95 ms", "error rate", "rejected", "thr. verdict"):
        header += [f"{m} {label}" for m in modes]
    return ["## block vs fail_fast (engine)", "",
            "The same configuration under each mode (engine means; the baseline has no mode).", "",
            md_table(header, rows), ""]


def _full_table(grid, configs):
    axes = list(grid["axes"])
    header = axes + ["impl", "n", "fail", "tasks/s mean", "stdev", "median", "95% CI", "CV", "eff.", "P95 ms mean",
                     "stdev", "median", "95% CI", "CV", "P50 ms", "P99 ms", "pooled P50/P95/P99 ms (tasks)",
                     "error rate", "CPU ms/task", "RSS MB"]
    rows = []
    for cfg in configs:
        for impl, cell in cfg["cells"].items():
            t, p = cell["throughput_tps"], cell["latency_p95_ms"]
            pooled = cell["pooled"]
            pooled_text = (f"{fmt(pooled['p50'])} / {fmt(pooled['p95'])} / {fmt(pooled['p99'])} ({pooled['tasks']})"
                           if pooled else "–")

            def ci(d):
                if d["ci_low"] is not None:
                    return fmt_ci(d["ci_low"], d["ci_high"])
                return "none: no spread" if d["note"] == stats.NO_SPREAD else "–"

            rows.append([cfg["config"].get(a) for a in axes]
                        + [impl, cell["n"], cell["n_failed"], fmt(t["mean"]), fmt(t["stdev"]), fmt(t["median"]),
                           ci(t), fmt_pct(t["cv"]) + (" ⚠" if t["cv"] is not None and t["cv"] > NOISE_CV else ""),
                           fmt(cell.get("efficiency")), fmt(p["mean"]), fmt(p["stdev"]), fmt(p["median"]), ci(p),
                           fmt_pct(p["cv"]) + (" ⚠" if p["cv"] is not None and p["cv"] > NOISE_CV else ""),
                           fmt(cell["latency_p50_ms"]["mean"]), fmt(cell["latency_p99_ms"]["mean"]), pooled_text,
                           fmt_share(cell["error_rate"]["mean"]), fmt(cell["cpu_ms_per_task"]),
                           fmt(cell["peak_rss_mb"])])
    return ["## Per configuration and implementation", "",
            "95% CI: Student's t interval of the mean over the cell's n trials; CV flagged (⚠) when > 10%; P50, "
            "P95, P99 ms: means of the trials' own percentiles; pooled: over all tasks of the cell.", "",
            md_table(header, rows), ""]


def render_markdown(meta, agg, charts, sweep_dir, chart_rel, trial_tails=None):
    grid = meta["grid"]
    configs = agg["configs"]
    trial_tails = trial_tails or {}
    lines = _header_lines(meta, agg, sweep_dir)
    rows = [r for c in configs for rs in c["rows"].values() for r in rs] + agg["failed_rows"]
    lines += _machine_lines(meta, rows)
    alias = _alias_note(grid)
    lines += ["## Grid", "",
              f"Implementations: {', '.join(grid.get('implementations', []))} (`engine` is this project's "
              f"engine, `baseline` the program it is measured against); repeats: {grid.get('repeats')}; seed: "
              f"{grid.get('seed')} (trial order and workload seeds); {agg['configs_planned']} configurations.", ""]
    if alias:
        lines += [f"Axis names are the trial parameters': {', '.join(alias)} is the injected transient-fault "
                  f"probability per attempt. It is not a trial's *error rate*, which in this report always "
                  f"means the share of submissions that did not succeed (trials.csv `error_rate`).", ""]
    lines += [md_table(["axis", "values"], [[a, ", ".join(str(v) for v in grid["axes"][a])] for a in grid["axes"]]),
              "", md_table(["fixed setting", "value"],
                           [[k, "–" if v is None else v] for k, v in grid["fixed"].items()]), ""]
    lines += _method_lines(meta)
    lines += _summary_lines(agg, configs)
    lines += _verdict_table(grid, configs, agg["halfwidth"])
    lines += ["## Charts", ""]
    for fname, title, text, caption in charts:
        if text is None:
            lines += [f"- {title}: not drawn: {caption}.", ""]
        else:
            lines += [f"![{title}]({chart_rel}/{fname})", "", f"*{title}: {caption}.*", ""]
    lines += _per_axis_lines(grid, configs)
    lines += _modes_lines(grid, agg, configs)
    lines += _full_table(grid, configs)
    if agg["failed_rows"]:
        lines += ["## Failed trials", ""]
        out = []
        for row in agg["failed_rows"]:
            config = ", ".join(f"{a}={row.get(a)}" for a in grid["axes"])
            why = row.get("reason") or row.get("_tail") or trial_tails.get(row.get("id"), "")
            out.append([row.get("id"), row.get("impl"), f"{int(row.get('repeat') or 0) + 1}", config,
                        row.get("status"), row.get("wall_s"), why])
        lines += [md_table(["trial", "impl", "repeat", "configuration", "status", "wall s",
                            "reason / last stderr line"], out), ""]
    lines += ["Files: `summary.csv` (the aggregates above, one row per configuration and implementation; "
              "comparison columns on the engine row), `trials.csv` (every trial), `trials/<id>.json` (full "
              "records with the latency histograms).", ""]
    return "\n".join(lines)


def write_report(sweep_dir, out_path=None):
    """Write report.md (default <sweep>/report.md), summary.csv and charts/ next to it.
    Returns {"report", "summary", "charts": [paths], "aggregate"}."""
    sweep_dir = os.path.abspath(sweep_dir)
    meta, rows = load_sweep(sweep_dir)
    out_path = os.path.abspath(out_path or os.path.join(sweep_dir, "report.md"))
    out_dir = os.path.dirname(out_path)
    chart_dir = os.path.join(out_dir, "charts")
    os.makedirs(chart_dir, exist_ok=True)
    agg = aggregate(meta, rows)
    charts = build_charts(meta, agg)
    written = []
    for fname, _title, text, _caption in charts:
        if text is not None:
            path = os.path.join(chart_dir, fname)
            write_text(path, text)
            written.append(path)
    summary_path = os.path.join(out_dir, "summary.csv")
    write_text(summary_path, summary_csv(meta, agg))
    write_text(out_path, render_markdown(meta, agg, charts, sweep_dir, "charts"))
    return {"report": out_path, "summary": summary_path, "charts": written, "aggregate": agg}
