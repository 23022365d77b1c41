"""The report's charts from an aggregate (analysis.report.aggregate): what to draw, and when not to.

- ratio_throughput.svg, ratio_p95.svg: every configuration's engine/baseline ratio with its Fieller 95%
  interval against the target line, coloured by verdict (analysis.verdicts).
- throughput_vs_workers.svg, p95_vs_clients.svg: a line per implementation over one axis, the other axes
  at the reference configuration; not drawn when the axis has a single value (one point is no line).
- block_vs_fail_fast.svg: both modes side by side; not drawn when the grid has one mode.
Series colours are fixed per implementation and mode (analysis.svg.SERIES_COLOURS).
"""
from analysis import svg
from analysis.verdicts import TARGETS, direction_symbol
from tqcontract.metrics import BASELINE, ENGINE

WHISKERS = "whiskers: 95% Student-t interval of the mean over trials"


def axis_values(grid):
    """Every parameter the report can slice by: the axes' values, or the fixed value as one value."""
    values = {k: list(v) for k, v in grid["axes"].items()}
    for k, v in grid["fixed"].items():
        values.setdefault(k, [v])
    return values


def config_key(config):
    return tuple(sorted(config.items(), key=lambda kv: kv[0]))


def index_of(agg):
    return {config_key(c["config"]): c for c in agg["configs"]}


def lookup(index, grid, ref, **overrides):
    config = dict(ref)
    for k, v in overrides.items():
        if k in grid["axes"]:
            config[k] = v
    return index.get(config_key(config))


def describe_config(config, skip=(), only=None):
    keys = [k for k in config if k not in skip and (only is None or k in only)]
    return ", ".join(f"{k}={config[k]}" for k in keys) or "(single configuration)"


def varying_axes(grid):
    return [a for a, vs in grid["axes"].items() if len(vs) > 1]


def _point(cfg, impl, metric):
    if cfg is None:
        return None
    d = cfg["cells"].get(impl, {}).get(metric)
    if not d or d["mean"] is None:
        return None
    return (d["mean"], d["ci_low"], d["ci_high"])


def _mode_of(grid, config):
    return config.get("mode", grid["fixed"].get("mode", "block"))


def reference(agg):
    if agg["best"] is not None:
        return agg["best"]["config"]
    return agg["configs"][0]["config"] if agg["configs"] else {}


def build_charts(meta, agg):
    """[(file name, title, svg text or None, caption)]: None when a chart is not drawn (caption says why)."""
    grid = meta["grid"]
    values = axis_values(grid)
    index = index_of(agg)
    ref = reference(agg)
    impls = [i for i in (ENGINE, BASELINE) if i in grid.get("implementations", [ENGINE, BASELINE])]
    labels_from = varying_axes(grid)
    charts = []

    for t in TARGETS:
        fname, title = f"ratio_{t['key']}.svg", f"Engine / baseline {t['label']} per configuration"
        rows = []
        for cfg in agg["configs"]:
            r = cfg["ratios"][t["key"]]
            label = " / ".join(str(cfg["config"].get(k)) for k in labels_from) or "(single configuration)"
            rows.append({"label": label, "ratio": r["ratio"],
                         "low": r["low"], "high": r["high"], "verdict": r["verdict"]})
        if not rows:
            charts.append((fname, title, None, "no trials recorded"))
            continue
        target_text = f"target {direction_symbol(t['direction'])} {t['target']:g}"
        text = svg.ratio_chart(title, rows, t["target"], t["direction"], f"{t['label']} (engine / baseline)",
                               note=f"Fieller 95% interval of the ratio of means; dashed: {target_text}; "
                                    f"colour: verdict",
                               subtitle="hollow: not comparable (the engine did not complete its submissions)",
                               label_header=" / ".join(labels_from) or None)
        charts.append((fname, title, text,
                       f"one row per configuration; bar: Fieller 95% interval, dot: ratio of means, dashed line: "
                       f"{target_text}; colour = verdict (green met, red not met, orange inconclusive, grey "
                       f"not comparable)"))

    for param, metric, fname, title, y_label in (
            ("workers", "throughput_tps", "throughput_vs_workers.svg", "Throughput against workers",
             "throughput (tasks/s)"),
            ("clients", "latency_p95_ms", "p95_vs_clients.svg", "P95 latency against clients",
             "P95 latency (ms)")):
        xs = values.get(param, [])
        if not agg["configs"]:
            charts.append((fname, title, None, "no trials recorded"))
            continue
        if len(xs) < 2:
            charts.append((fname, title, None, f"{param} has a single value ({xs[0] if xs else '?'}) in this "
                                               f"grid: one point is no line"))
            continue
        mode = _mode_of(grid, ref)
        series = [(f"{impl} {mode}", [_point(lookup(index, grid, ref, **{param: x}), impl, metric) for x in xs])
                  for impl in impls]
        other = describe_config(ref, skip=(param,))
        if not any(v for _, vs in series for v in vs):
            charts.append((fname, title, None, f"no ok trials in the slice {other}"))
            continue
        text = svg.line_chart(title, param, y_label, [str(x) for x in xs], series, note=WHISKERS,
                              subtitle=f"other axes at the reference configuration: {other}")
        charts.append((fname, title, text, f"{param} on x; other axes at {other} (the reference "
                                           f"configuration); {WHISKERS}"))

    fname, title = "block_vs_fail_fast.svg", "block vs fail_fast"
    modes = values.get("mode", [])
    if not agg["configs"]:
        charts.append((fname, title, None, "no trials recorded"))
    elif len(modes) < 2:
        charts.append((fname, title, None, f"mode has a single value ({modes[0] if modes else '?'}) in this "
                                           f"grid: nothing to compare"))
    else:
        groups = [(c, q) for c in values.get("clients", []) for q in values.get("queue_size", [])]
        multi_q = len(values.get("queue_size", [])) > 1
        labels = [f"{c} / q{q}" if multi_q else f"{c}" for c, q in groups]
        x_label = "clients" + (" / queue_size" if multi_q else "")
        series_names = [f"{impl} {mode}" for impl in impls for mode in modes]
        panels = []
        for metric, ptitle, y_label in (("throughput_tps", "Throughput (goodput)", "tasks/s"),
                                        ("latency_p95_ms", "P95 latency", "ms"),
                                        ("error_rate", "Error rate (not success)", "share of submissions")):
            vals = {}
            for impl in impls:
                for mode in modes:
                    vals[f"{impl} {mode}"] = [
                        _point(lookup(index, grid, ref, mode=mode, clients=c, queue_size=q), impl, metric)
                        for c, q in groups]
            panels.append({"title": ptitle, "y_label": y_label, "categories": labels, "values": vals,
                           "x_label": x_label})
        other = describe_config(ref, skip=("mode", "clients", "queue_size"))
        text = svg.bar_panels("block vs fail_fast", panels, series_names, note=WHISKERS,
                              subtitle=f"other axes at the reference configuration: {other}")
        charts.append((fname, title, text,
                       f"bars grouped by clients and queue size; other axes at {other}; the baseline has no "
                       f"mode or queue (its two bars are separate trials of the same program); {WHISKERS}"))
    return charts
