"""Turn a sweep folder into report.md, summary.csv and charts/*.svg (standard library only).

Input: <sweep>/sweep.json (grid, machine, interpreter) and <sweep>/trials.csv (one row per trial; every
number the report aggregates comes from this file, so anyone can recompute the intervals from it).
"""
import csv
import io
import json
import math
import os
import re
import statistics
from datetime import datetime, timezone

from analysis import stats, svg
from tqcontract.metrics import BASELINE, ENGINE, canonical_impl
from tqcontract.files import write_text


NOISE_CV = 0.10
# The user's targets: engine/baseline ratios of means.
TARGETS = (
    {"key": "throughput", "metric": "throughput_tps", "label": "throughput ratio", "target": 2.0,
     "direction": ">="},
    {"key": "p95", "metric": "latency_p95_ms", "label": "P95 ratio", "target": 0.6, "direction": "<="},
)
DETAIL_METRICS = ("throughput_tps", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "latency_mean_ms",
                  "error_rate")
MEAN_METRICS = ("efficiency", "peak_rss_mb", "rejected", "retried", "dead_lettered", "wall_s")
NOISE_METRICS = (("throughput_tps", "throughput"), ("latency_p95_ms", "P95"))


class ReportError(Exception):
    """A folder that cannot be reported on; str(error) is the one line to print."""


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
    if text is None or text == "":
        return None
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def load_sweep(sweep_dir):
    """(meta, rows) of a sweep folder; ReportError when it is not one."""
    meta_path = os.path.join(sweep_dir, "sweep.json")
    csv_path = os.path.join(sweep_dir, "trials.csv")
    if not os.path.isfile(meta_path):
        raise ReportError(f"{sweep_dir}: no sweep.json (not a sweep folder)")
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        grid = meta["grid"]
        grid["axes"], grid["fixed"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ReportError(f"{meta_path}: unreadable or not a sweep description") from None
    if not os.path.isfile(csv_path):
        raise ReportError(f"{sweep_dir}: no trials.csv")
    try:
        with open(csv_path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error) as exc:
        raise ReportError(f"{csv_path}: unreadable ({exc})") from None
    # trial files written before the engine was called `engine` name it `optimized`: read it as today
    grid["implementations"] = [canonical_impl(i) for i in grid.get("implementations", [BASELINE, ENGINE])]
    for row in rows:
        row["impl"] = canonical_impl(row.get("impl", ""))
    return meta, rows


# ----------------------------------------------------------------------------------------- aggregate

def _axis_values(grid):
    """Every parameter the report can slice by: the axes' values, or the fixed value as one value."""
    values = {k: list(v) for k, v in grid["axes"].items()}
    for k, v in grid["fixed"].items():
        values.setdefault(k, [v])
    return values


def aggregate(meta, rows):
    """Per configuration: its axis values, per-implementation statistics and the engine/baseline ratios.

    Returns a dict: {"configs": [config dicts in grid order], "counts": {status: n}, "failed_rows": [...],
    "best": config dict or None}.
    """
    grid = meta["grid"]
    axes = list(grid["axes"])
    by_config = {}
    counts = {}
    failed_rows = []
    for row in rows:
        status = row.get("status", "")
        counts[status] = counts.get(status, 0) + 1
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

    configs = sorted(by_config.values(), key=order_key)
    for cfg in configs:
        cfg["cells"] = {}
        for impl in grid.get("implementations", [BASELINE, ENGINE]):
            impl_rows = cfg["rows"].get(impl, [])
            cell = {"impl": impl, "n": len(impl_rows), "n_failed": cfg["failed"].get(impl, 0)}
            for m in DETAIL_METRICS:
                cell[m] = stats.describe([v for v in (_num(r.get(m)) for r in impl_rows) if v is not None])
            for m in MEAN_METRICS:
                vals = [v for v in (_num(r.get(m)) for r in impl_rows) if v is not None]
                cell[m] = statistics.fmean(vals) if vals else None
            cell["noisy"] = [label for m, label in NOISE_METRICS
                             if cell[m]["cv"] is not None and cell[m]["cv"] > NOISE_CV]
            cfg["cells"][impl] = cell
        cfg["ratios"] = {t["key"]: _ratio(cfg, t) for t in TARGETS}
    engine_cells = [c for c in configs if c["cells"].get(ENGINE, {}).get("throughput_tps", {}).get("mean")
                    is not None]
    best = max(engine_cells, key=lambda c: c["cells"][ENGINE]["throughput_tps"]["mean"]) if engine_cells \
        else None
    return {"configs": configs, "counts": counts, "failed_rows": failed_rows, "best": best}


def _values(cfg, impl, metric):
    return [v for v in (_num(r.get(metric)) for r in cfg["rows"].get(impl, [])) if v is not None]


def _ratio(cfg, target):
    a = _values(cfg, ENGINE, target["metric"])
    b = _values(cfg, BASELINE, target["metric"])
    out = {"ratio": None, "low": None, "high": None, "df": None, "boot_low": None, "boot_high": None,
           "verdict": "no data", "boot_verdict": None, "note": "", "n_engine": len(a), "n_baseline": len(b)}
    if not a or not b:
        out["note"] = "no ok trials on one side"
        return out
    mb = statistics.fmean(b)
    if mb == 0:
        out["note"] = "baseline mean is 0"
        return out
    out["ratio"] = statistics.fmean(a) / mb
    fieller = stats.fieller_ratio(a, b)
    if fieller is None:
        out["verdict"] = "inconclusive"
        pv = stats.point_verdict(out["ratio"], target["target"], target["direction"])
        out["note"] = f"n={min(len(a), len(b))}: no interval; the point estimate alone {pv} the target"
        return out
    out["low"], out["high"], out["df"] = fieller["low"], fieller["high"], fieller["df"]
    out["verdict"] = stats.verdict(fieller["low"], fieller["high"], target["target"], target["direction"])
    if not fieller["bounded"]:
        out["note"] = "baseline mean not distinguishable from 0: unbounded interval"
    boot = stats.bootstrap_ratio(a, b)
    if boot is not None:
        out["boot_low"], out["boot_high"] = boot["low"], boot["high"]
        out["boot_verdict"] = stats.verdict(boot["low"], boot["high"], target["target"], target["direction"])
        if out["boot_verdict"] != out["verdict"]:
            sep = "; " if out["note"] else ""
            out["note"] += f"{sep}bootstrap interval says {out['boot_verdict']}"
    return out


# ------------------------------------------------------------------------------------------ format

def fmt(v, digits=3):
    if v is None:
        return "–"
    if isinstance(v, float) and math.isinf(v):
        return "∞" if v > 0 else "−∞"
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:.{max(digits, len(str(int(abs(v)))))}g}"


def fmt_ci(low, high, digits=3):
    if low is None or high is None:
        return "–"
    return f"[{fmt(low, digits)}, {fmt(high, digits)}]"


def fmt_pct(v):
    return "–" if v is None else f"{100 * v:.1f}%"


def md_table(header, rows):
    def cell(x):
        return str(x).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


def _names(grid):
    return grid.get("axis_names", {})


def describe_config(grid, config, skip=()):
    names = _names(grid)
    return ", ".join(f"{names.get(k, k)}={v}" for k, v in config.items() if k not in skip) or "(single)"


# ------------------------------------------------------------------------------------------ charts

def _index(agg):
    return {tuple(sorted(c["config"].items(), key=lambda kv: kv[0])): c for c in agg["configs"]}


def _lookup(index, grid, ref, **overrides):
    config = dict(ref)
    for k, v in overrides.items():
        if k in grid["axes"]:
            config[k] = v
    return index.get(tuple(sorted(config.items(), key=lambda kv: kv[0])))


def _point(cfg, impl, metric):
    if cfg is None:
        return None
    d = cfg["cells"].get(impl, {}).get(metric)
    if not d or d["mean"] is None:
        return None
    return (d["mean"], d["ci_low"], d["ci_high"])


def _reference(agg):
    if agg["best"] is not None:
        return agg["best"]["config"]
    return agg["configs"][0]["config"] if agg["configs"] else {}


def build_charts(meta, agg):
    """[(file name, title, svg text or None, caption)]: None when a chart cannot be drawn (caption says why)."""
    grid = meta["grid"]
    names = _names(grid)
    values = _axis_values(grid)
    index = _index(agg)
    ref = _reference(agg)
    impls = [i for i in (ENGINE, BASELINE) if i in grid.get("implementations", [ENGINE, BASELINE])]
    charts = []

    def single(param):
        return " (single value in this grid)" if len(values.get(param, [])) < 2 else ""

    for param, metric, fname, title, y_label in (
            ("workers", "throughput_tps", "throughput_vs_workers.svg", "Throughput against workers",
             "throughput (tasks/s)"),
            ("clients", "latency_p95_ms", "p95_vs_clients.svg", "P95 latency against clients",
             "P95 latency (ms)")):
        if not agg["configs"]:
            charts.append((fname, title, None, "no trials recorded"))
            continue
        xs = values.get(param, [])
        series = [(impl, [_point(_lookup(index, grid, ref, **{param: x}), impl, metric) for x in xs])
                  for impl in impls]
        other = describe_config(grid, ref, skip=(param,))
        caption = f"{names.get(param, param)} on x{single(param)}; other axes at {other} (the best engine " \
                  f"configuration); whiskers: 95% t interval of the mean"
        if not any(v for _, vs in series for v in vs):
            charts.append((fname, title, None, f"no ok trials in the slice {other}"))
            continue
        text = svg.line_chart(title, names.get(param, param), y_label, [str(x) for x in xs], series,
                              note="whiskers: 95% t interval of the mean" + single(param),
                              subtitle=f"other axes at the best engine configuration: {other}")
        charts.append((fname, title, text, caption))

    fname, title = "block_vs_fail_fast.svg", "block vs fail_fast"
    if not agg["configs"]:
        charts.append((fname, title, None, "no trials recorded"))
    else:
        modes = values.get("mode", [])
        # groups: every clients x queue_size pair (a full queue is where the modes differ)
        groups = [(c, q) for c in values.get("clients", []) for q in values.get("queue_size", [])]
        multi_q = len(values.get("queue_size", [])) > 1
        labels = [f"{c} / q{q}" if multi_q else f"{c}" for c, q in groups]
        x_label = f"{names.get('clients', 'clients')}" + (" / queue_size" if multi_q else "")
        series_names = [f"{impl} {mode}" for impl in impls for mode in modes]
        panels = []
        for metric, ptitle, y_label in (("throughput_tps", "Throughput", "tasks/s"),
                                        ("latency_p95_ms", "P95 latency", "ms"),
                                        ("error_rate", "Error rate (not success)", "share of tasks")):
            vals = {}
            for impl in impls:
                for mode in modes:
                    vals[f"{impl} {mode}"] = [
                        _point(_lookup(index, grid, ref, mode=mode, clients=c, queue_size=q), impl, metric)
                        for c, q in groups]
            panels.append({"title": ptitle, "y_label": y_label, "categories": labels, "values": vals,
                           "x_label": x_label})
        other = describe_config(grid, ref, skip=("mode", "clients", "queue_size"))
        caption = f"mode{single('mode')}; bars grouped by clients{single('clients')} and queue size" \
                  f"{single('queue_size')}; other axes at {other}; the baseline ignores mode and queue size " \
                  f"(shown for reference); whiskers: 95% t interval"
        text = svg.bar_panels("block vs fail_fast", panels, series_names,
                              note="whiskers: 95% t interval of the mean",
                              subtitle=f"other axes at the best engine configuration: {other}")
        charts.append((fname, title, text, caption))
    return charts


# ------------------------------------------------------------------------------------------ output

def summary_csv(meta, agg):
    grid = meta["grid"]
    axes = list(grid["axes"])
    header = ["config_id"] + axes + ["impl", "n", "n_failed"]
    for m in DETAIL_METRICS:
        header += [f"{m}_{s}" for s in ("mean", "stdev", "median", "cv", "ci_low", "ci_high")]
    header += [f"{m}_mean" for m in MEAN_METRICS]
    for t in TARGETS:
        k = t["key"]
        header += [f"{k}_ratio", f"{k}_ratio_ci_low", f"{k}_ratio_ci_high", f"{k}_ratio_df",
                   f"{k}_ratio_boot_low", f"{k}_ratio_boot_high", f"{k}_verdict"]
    header += ["noisy"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)

    def val(v):
        if v is None:
            return ""
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
            for t in TARGETS:
                r = cfg["ratios"][t["key"]]
                if impl == ENGINE:
                    row += [val(r["ratio"]), val(r["low"]), val(r["high"]), val(r["df"]), val(r["boot_low"]),
                            val(r["boot_high"]), r["verdict"]]
                else:
                    row += [""] * 7
            row.append(";".join(cell["noisy"]))
            w.writerow(row)
    return buf.getvalue()


def _verdict_cell(r, target):
    v = r["verdict"]
    return f"**{v}**" if v == "met" else v


def render_markdown(meta, agg, charts, sweep_dir, chart_rel, trial_tails):
    grid = meta["grid"]
    names = _names(grid)
    axes = list(grid["axes"])
    values = _axis_values(grid)
    configs = agg["configs"]
    total = sum(agg["counts"].values())
    ok = agg["counts"].get("ok", 0)
    lines = [f"# Sweep report: {grid['name']}", ""]
    if grid.get("description"):
        lines += [grid["description"], ""]
    failed_desc = ", ".join(f"{n} {s}" for s, n in sorted(agg["counts"].items()) if s != "ok") or "none failed"
    lines += [f"- Sweep folder: `{sweep_dir}`",
              f"- Trials recorded: {total} ({ok} ok; {failed_desc})",
              f"- Sweep started: {meta.get('started_at', '?')}; last run finished: "
              f"{meta.get('finished_at', 'not finished')}",
              f"- Git commit: `{meta.get('git_commit') or 'unknown'}`"
              + (" (uncommitted changes)" if meta.get("git_dirty") else ""),
              f"- Report generated: {datetime.now(timezone.utc).isoformat(timespec='seconds')}", ""]

    machine = meta.get("machine", {})
    tpy = meta.get("trial_python", {})
    spy = meta.get("sweep_python", {})
    lines += ["## Machine and interpreter", "",
              f"- Platform: {machine.get('platform', '?')} ({machine.get('machine', '?')})",
              f"- CPUs: {machine.get('cpu_count', '?')} (usable by this process: "
              f"{machine.get('cpu_usable', '?')})",
              f"- Trial interpreter: {tpy.get('implementation', '?')} {tpy.get('python_version', '?')} "
              f"(`{tpy.get('executable', '?')}`, GIL {'on' if tpy.get('gil_enabled', True) else 'off'})",
              f"- Sweep interpreter: {spy.get('implementation', '?')} {spy.get('python_version', '?')}",
              f"- Each trial ran alone, in its own process (`python -m {meta.get('trial_module', 'runners.trial')}`)"
              f" with the environment recorded in sweep.json; timeout {grid.get('timeout_s')} s per trial.",
              f"- Scratch files (source objects, outputs, SQLite) on: "
              f"{(meta.get('scratch') or {}).get('filesystem') or 'unknown'} "
              f"(`{(meta.get('scratch') or {}).get('path', '?')}`; TQ_SCRATCH_DIR chooses)", ""]

    lines += ["## Grid", "",
              f"Implementations: {', '.join(grid.get('implementations', []))}; repeats: {grid.get('repeats')}; "
              f"seed: {grid.get('seed')} (trial order and workload seeds); "
              f"{len(configs)} configurations.", "",
              md_table(["axis", "values"], [[names.get(a, a), ", ".join(str(v) for v in grid["axes"][a])]
                                            for a in axes]), "",
              md_table(["fixed setting", "value"], [[k, "–" if v is None else v] for k, v in grid["fixed"].items()]),
              ""]

    lines += ["## Method", "",
              "- Per configuration and implementation: n ok trials, mean, sample stdev, median, and the 95% "
              "interval of the mean from Student's t (quantile computed exactly from the incomplete beta "
              "function). CV = stdev / mean; a cell with CV > 10% is flagged noisy.",
              "- Ratios are engine mean / `baseline` mean of the same configuration, from "
              "trials run back to back. Their 95% interval is Fieller's (the ratios R for which "
              "mean_engine − R·mean_baseline is within t·SE of 0, Welch degrees of freedom), exact under "
              "normal noise and wide when repeats are few. A percentile bootstrap (10,000 resamples of the "
              "ratio of means, fixed seed) is in summary.csv as a cross-check; a note says where it "
              "disagrees. The baseline has no queue size or mode: it still runs in every configuration, so "
              "the two sides of each ratio are measured back to back under the same conditions.",
              "- Efficiency (eff.) = throughput / ceiling, the mean over a cell's ok trials. The ceiling is "
              "workers × 1000 / service time (`latency_ms`; over HTTP at least two requests' server "
              "latency), the same for both implementations: it is what the workers could do if they never "
              "waited for anything but the work. The baseline's global lock runs one task at a time, so it "
              "can reach at most 1 / workers of it.",
              "- Verdicts: **met** when the whole interval clears the target, **not met** when the whole "
              "interval misses it, **inconclusive** otherwise. With fewer than 2 ok trials on a side there "
              "is no interval: the verdict is inconclusive and the note says what the point estimate alone "
              "suggests.",
              "- Recompute: in trials.csv take the rows with status `ok`, group by `config_id` and `impl`, "
              "and use the columns `throughput_tps` and `latency_p95_ms`.", ""]

    # ------------------------------------------------------------------ summary
    lines += ["## Summary", ""]
    for t in TARGETS:
        tally = {}
        for cfg in configs:
            v = cfg["ratios"][t["key"]]["verdict"]
            tally[v] = tally.get(v, 0) + 1
        parts = [f"{tally.get(v, 0)} {v}" for v in ("met", "not met", "inconclusive")]
        if tally.get("no data"):
            parts.append(f"{tally['no data']} without data")
        lines.append(f"- Target {t['label']} {t['direction'].replace('>=', '≥').replace('<=', '≤')} "
                     f"{t['target']:g}: {', '.join(parts)} of {len(configs)} configurations.")
    best = agg["best"]
    if best is not None:
        cell = best["cells"][ENGINE]["throughput_tps"]
        r = best["ratios"]["throughput"]
        rp = best["ratios"]["p95"]
        lines.append(f"- Best configuration by engine throughput: {describe_config(grid, best['config'])}: "
                     f"{fmt(cell['mean'])} tasks/s (95% CI {fmt_ci(cell['ci_low'], cell['ci_high'])}, "
                     f"n={cell['n']}); throughput ratio {fmt(r['ratio'])} {fmt_ci(r['low'], r['high'])} "
                     f"({r['verdict']}), P95 ratio {fmt(rp['ratio'])} {fmt_ci(rp['low'], rp['high'])} "
                     f"({rp['verdict']}).")
        steady = [c for c in configs if c["cells"].get(ENGINE, {}).get("throughput_tps", {}).get("ci_low")
                  is not None]
        if steady:
            robust = max(steady, key=lambda c: c["cells"][ENGINE]["throughput_tps"]["ci_low"])
            if robust is not best:
                rc = robust["cells"][ENGINE]["throughput_tps"]
                lines.append(f"- Best by the low end of the engine's 95% interval (a maximum of noisy means "
                             f"favours a lucky cell): {describe_config(grid, robust['config'])}: "
                             f"{fmt(rc['mean'])} tasks/s {fmt_ci(rc['ci_low'], rc['ci_high'])}; throughput "
                             f"ratio {fmt(robust['ratios']['throughput']['ratio'])} "
                             f"({robust['ratios']['throughput']['verdict']}), P95 ratio "
                             f"{fmt(robust['ratios']['p95']['ratio'])} ({robust['ratios']['p95']['verdict']}).")
    else:
        lines.append("- No ok engine trials: no best configuration.")
    noisy = [(cfg, impl, cell["noisy"]) for cfg in configs for impl, cell in cfg["cells"].items()
             if cell["noisy"]]
    if noisy:
        lines.append(f"- Noisy cells (CV > 10%): {len(noisy)}: " + "; ".join(
            f"{impl} {describe_config(grid, cfg['config'])} ({', '.join(n)})" for cfg, impl, n in noisy[:12])
            + (" …" if len(noisy) > 12 else "."))
    else:
        lines.append("- Noisy cells (CV > 10%): none.")
    single_n = sum(1 for cfg in configs for c in cfg["cells"].values() if c["n"] == 1)
    if single_n:
        lines.append(f"- {single_n} cells have a single ok trial: no interval there.")
    if agg["failed_rows"]:
        lines.append(f"- Failed trials: {len(agg['failed_rows'])} (see the end of this report); they are "
                     f"left out of every statistic.")
    lines.append("")

    lines += ["### Verdicts per configuration", ""]
    header = [names.get(a, a) for a in axes] + ["n b/o", "throughput ratio [95% CI]", "≥ 2",
                                                "P95 ratio [95% CI]", "≤ 0.6", "notes"]
    rows = []
    for cfg in configs:
        rt, rp = cfg["ratios"]["throughput"], cfg["ratios"]["p95"]
        notes = []
        for label, r in (("throughput", rt), ("P95", rp)):
            if r["note"]:
                notes.append(f"{label}: {r['note']}")
        for impl, cell in cfg["cells"].items():
            if cell["noisy"]:
                notes.append(f"{impl} noisy ({', '.join(cell['noisy'])})")
            if cell["n_failed"]:
                notes.append(f"{impl}: {cell['n_failed']} failed")
        rows.append([cfg["config"].get(a) for a in axes]
                    + [f"{cfg['cells'].get(BASELINE, {}).get('n', 0)}/{cfg['cells'].get(ENGINE, {}).get('n', 0)}",
                       f"{fmt(rt['ratio'])} {fmt_ci(rt['low'], rt['high'])}", _verdict_cell(rt, TARGETS[0]),
                       f"{fmt(rp['ratio'])} {fmt_ci(rp['low'], rp['high'])}", _verdict_cell(rp, TARGETS[1]),
                       "; ".join(notes)])
    lines += [md_table(header, rows), ""]

    # ------------------------------------------------------------------ charts
    lines += ["## Charts", ""]
    for fname, title, text, caption in charts:
        if text is None:
            lines += [f"- {title}: not drawn: {caption}.", ""]
        else:
            lines += [f"![{title}]({chart_rel}/{fname})", "", f"*{title}: {caption}.*", ""]

    # ------------------------------------------------------------------ per axis
    lines += ["## Per axis", "",
              "Each row averages the cell means of every configuration with that value (the other axes "
              "vary); ratios are the median over those configurations.", ""]
    for a in axes:
        vals = grid["axes"][a]
        if len(vals) < 2:
            lines += [f"- {names.get(a, a)}: single value ({vals[0]}) in this grid: no table.", ""]
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

            met = [sum(1 for c in group if c["ratios"][t["key"]]["verdict"] == "met") for t in TARGETS]
            rows.append([v, len(group), fmt(mean_of(ENGINE, "throughput_tps")),
                         fmt(mean_of(BASELINE, "throughput_tps")), fmt(med_ratio("throughput")),
                         fmt(mean_scalar(ENGINE, "efficiency")),
                         fmt(mean_of(ENGINE, "latency_p95_ms")), fmt(mean_of(BASELINE, "latency_p95_ms")),
                         fmt(med_ratio("p95")), fmt_pct(mean_of(ENGINE, "error_rate")),
                         f"{met[0]}/{len(group)}", f"{met[1]}/{len(group)}"])
        lines += [f"### {names.get(a, a)}", "",
                  md_table([names.get(a, a), "configs", "engine tasks/s", "baseline tasks/s", "thr. ratio",
                            "engine eff.", "engine P95 ms", "baseline P95 ms", "P95 ratio", "engine errors",
                            "thr. met", "P95 met"], rows), ""]

    # ------------------------------------------------------------------ block vs fail_fast
    if "mode" in grid["axes"] and len(grid["axes"]["mode"]) > 1:
        modes = grid["axes"]["mode"]
        index = _index(agg)
        others = [a for a in axes if a != "mode"]
        seen, rows = set(), []
        for cfg in configs:
            key = tuple(cfg["config"].get(a) for a in others)
            if key in seen:
                continue
            seen.add(key)
            cells = [_lookup(index, grid, cfg["config"], mode=m) for m in modes]
            row = [cfg["config"].get(a) for a in others]
            for metric, f in (("throughput_tps", fmt), ("latency_p95_ms", fmt), ("error_rate", fmt_pct)):
                for c in cells:
                    d = c["cells"].get(ENGINE, {}).get(metric, {}) if c else {}
                    row.append(f(d.get("mean")))
            for c in cells:
                row.append(fmt((c["cells"].get(ENGINE, {}) if c else {}).get("rejected")))
            rows.append(row)
        header = [names.get(a, a) for a in others]
        for label in ("tasks/s", "P95 ms", "errors", "rejected"):
            header += [f"{m} {label}" for m in modes]
        lines += ["## block vs fail_fast (engine)", "",
                  "The same configuration under each mode (engine means; the baseline has no mode).", "",
                  md_table(header, rows), ""]
    else:
        lines += ["## block vs fail_fast (engine)", "",
                  f"mode has a single value ({_axis_values(grid).get('mode', ['?'])[0]}) in this grid: no "
                  f"comparison.", ""]

    # ------------------------------------------------------------------ full statistics
    lines += ["## Per configuration and implementation", "",
              "95% CI: Student's t interval of the mean; CV flagged when > 10%.", ""]
    header = [names.get(a, a) for a in axes] + ["impl", "n", "fail", "tasks/s mean", "stdev", "median",
                                                "95% CI", "CV", "eff.", "P95 ms mean", "stdev", "median",
                                                "95% CI", "CV", "P50 ms", "P99 ms", "errors", "RSS MB"]
    rows = []
    for cfg in configs:
        for impl, cell in cfg["cells"].items():
            t, p = cell["throughput_tps"], cell["latency_p95_ms"]
            rows.append([cfg["config"].get(a) for a in axes]
                        + [impl, cell["n"], cell["n_failed"], fmt(t["mean"]), fmt(t["stdev"]), fmt(t["median"]),
                           fmt_ci(t["ci_low"], t["ci_high"]),
                           fmt_pct(t["cv"]) + (" ⚠" if t["cv"] is not None and t["cv"] > NOISE_CV else ""),
                           fmt(cell.get("efficiency")), fmt(p["mean"]), fmt(p["stdev"]), fmt(p["median"]), fmt_ci(p["ci_low"], p["ci_high"]),
                           fmt_pct(p["cv"]) + (" ⚠" if p["cv"] is not None and p["cv"] > NOISE_CV else ""),
                           fmt(cell["latency_p50_ms"]["mean"]), fmt(cell["latency_p99_ms"]["mean"]),
                           fmt_pct(cell["error_rate"]["mean"]), fmt(cell["peak_rss_mb"])])
    lines += [md_table(header, rows), ""]

    if agg["failed_rows"]:
        lines += ["## Failed trials", ""]
        rows = []
        for row in agg["failed_rows"]:
            config = ", ".join(f"{names.get(a, a)}={row.get(a)}" for a in axes)
            rows.append([row.get("id"), row.get("impl"), f"{int(row.get('repeat') or 0) + 1}", config,
                         row.get("status"), row.get("wall_s"), trial_tails.get(row.get("id"), "")])
        lines += [md_table(["trial", "impl", "repeat", "configuration", "status", "wall s", "last stderr line"],
                           rows), ""]
    lines += ["Files: `summary.csv` (the aggregates above, one row per configuration and implementation; "
              "ratio columns on the engine row), `trials.csv` (every trial), `trials/<id>.json` (full "
              "records).", ""]
    return "\n".join(lines)


def _trial_tails(sweep_dir, rows):
    tails = {}
    for row in rows:
        if row.get("status") == "ok":
            continue
        path = os.path.join(sweep_dir, "trials", f"{row.get('id')}.json")
        try:
            with open(path, encoding="utf-8") as f:
                rec = json.load(f)
        except (OSError, ValueError):
            continue
        last = [line.strip() for line in (rec.get("stderr_tail") or "").splitlines()
                if line.strip() and not line.startswith("[killed with its process group")]
        if last:
            tails[row.get("id")] = last[-1][:160]
    return tails


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
    md = render_markdown(meta, agg, charts, sweep_dir, "charts", _trial_tails(sweep_dir, rows))
    write_text(out_path, md)
    return {"report": out_path, "summary": summary_path, "charts": written, "aggregate": agg}
