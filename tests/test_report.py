"""`python -m lab report` on a fixture sweep (tests/fixtures/sweep_small, made with the fake trial; see its
README): report.md with verdict lines, summary.csv, SVG charts that parse; intervals recomputable from
trials.csv; n = 1 and single-valued axes handled; bad folders exit 2."""
import csv
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from analysis import report as reportmod
from analysis import stats, svg
from lab import reporting
from tqcontract.histogram import LatencyHistogram
from tqcontract.metrics import canonical_impl, percentile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "sweep_small")
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def sweep_dir(tmp_path):
    target = tmp_path / "sweep_small"
    shutil.copytree(FIXTURE, target)
    return target


def run_report(*args):
    return subprocess.run([sys.executable, "-m", "lab", "report", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_report_renders_from_fixture(sweep_dir):
    proc = run_report(str(sweep_dir))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(sweep_dir / "report.md")
    md = (sweep_dir / "report.md").read_text()

    tallies = {}
    for label in ("throughput ratio ≥ 2", "P95 ratio ≤ 0.6"):
        m = re.search(rf"- Target {re.escape(label)}: (\d+) met, (\d+) not met, (\d+) inconclusive, (\d+) not "
                      rf"comparable of (\d+) configurations\.", md)
        assert m, label
        met, not_met, inconclusive, not_comparable, total = map(int, m.groups())
        assert met + not_met + inconclusive + not_comparable == total == 8
        tallies[label] = (met, not_met, inconclusive, not_comparable)
    # the fixture's fail_fast engine rejects 10% at 100 clients (the baseline none): never met
    assert tallies["throughput ratio ≥ 2"] == (1, 4, 1, 2) and tallies["P95 ratio ≤ 0.6"] == (2, 4, 0, 2)
    assert "- Best comparable configuration by engine throughput: workers=8, queue_size=16, mode=block" in md
    assert "engine did not complete 10% of submissions (baseline 0%)" in md
    assert "## Machine and interpreter" in md and "CPython" in md
    assert "- Single-core speed: not recorded" in md        # the fixture's sweep.json predates it
    assert "Noisy cells (CV > 10%)" in md
    assert "## Failed trials" in md and "timeout" in md
    assert "simulated hang (fixture)" in md          # last stderr line of the failed trial's record
    assert "transient_rate: single value (0.05) in this grid: no table." in md
    # one name per thing: the engine is `engine` (the fixture's files say `optimized`), the axis is
    # transient_rate, and the grid file's name for it is said once
    assert "optimized" not in md and "| transient_rate |" in md
    assert md.count("the grid file's `error_rate`") == 1
    assert "The baseline does not retry" in md
    # efficiency (throughput / ceiling) is in the per-axis and per-configuration tables; the fixture's trials
    # have no ceiling, so the cells say so with a dash
    assert "| thr. ratio | engine eff. | engine P95 ms |" in md and "| CV | eff. | P95 ms mean |" in md

    # the verdict row of the clearest configuration
    row = next(line for line in md.splitlines() if line.startswith("| 8 | 16 | block | 0.05 | 100 | local |"))
    assert row.count("**met**") == 2
    row = next(line for line in md.splitlines() if line.startswith("| 8 | 16 | fail_fast | 0.05 | 100 | local |"))
    assert row.count("not comparable") >= 2 and "**met**" not in row

    charts = re.findall(r"!\[[^\]]*\]\((charts/[^)]+\.svg)\)", md)
    assert sorted(charts) == ["charts/block_vs_fail_fast.svg", "charts/p95_vs_clients.svg",
                              "charts/ratio_p95.svg", "charts/ratio_throughput.svg",
                              "charts/throughput_vs_workers.svg"]
    for rel in charts:
        root = ET.parse(sweep_dir / rel).getroot()
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        assert root.findall(".//{http://www.w3.org/2000/svg}circle") or \
            root.findall(".//{http://www.w3.org/2000/svg}rect")

    summary = read_csv(sweep_dir / "summary.csv")
    assert len(summary) == 16
    assert {r["impl"] for r in summary} == {"baseline", "engine"}
    assert all(r["throughput_verdict"] in ("met", "not met", "inconclusive", "not comparable") for r in summary
               if r["impl"] == "engine")
    assert not [c for c in summary[0] if "boot" in c]          # the bootstrap cross-check is gone
    assert not [n for n in os.listdir(sweep_dir) if n.endswith(".tq-tmp")]


def test_intervals_recompute_from_trials_csv(sweep_dir):
    out = reportmod.write_report(str(sweep_dir))
    summary = {(r["config_id"], r["impl"]): r for r in read_csv(out["summary"])}
    trials = [r for r in read_csv(sweep_dir / "trials.csv") if r["status"] == "ok"]
    groups = {}
    for r in trials:
        groups.setdefault((r["config_id"], canonical_impl(r["impl"])), []).append(r)
    checked = 0
    for (cid, impl), rows in groups.items():
        thr = [float(r["throughput_tps"]) for r in rows]
        s = summary[(cid, impl)]
        assert int(s["n"]) == len(thr)
        assert float(s["throughput_tps_mean"]) == pytest.approx(statistics.fmean(thr))
        assert float(s["throughput_tps_median"]) == pytest.approx(statistics.median(thr))
        if len(thr) == 3:   # t_{0.975,2} = 4.303 from the table
            half = 4.303 * statistics.stdev(thr) / math.sqrt(3)
            assert float(s["throughput_tps_ci_low"]) == pytest.approx(statistics.fmean(thr) - half, rel=1e-3)
            assert float(s["throughput_tps_ci_high"]) == pytest.approx(statistics.fmean(thr) + half, rel=1e-3)
            checked += 1
        if impl == "engine":
            base = [float(r["latency_p95_ms"]) for r in groups[(cid, "baseline")]]
            eng = [float(r["latency_p95_ms"]) for r in rows]
            assert float(s["p95_ratio"]) == pytest.approx(statistics.fmean(eng) / statistics.fmean(base))
            # Fieller bounds solve (mean_e - R mean_b)^2 = t^2 (var_e/n_e + R^2 var_b/n_b)
            t = stats.t_ppf(0.975, float(s["p95_ratio_df"]))
            ve, vb = statistics.variance(eng) / len(eng), statistics.variance(base) / len(base)
            for bound in (float(s["p95_ratio_ci_low"]), float(s["p95_ratio_ci_high"])):
                lhs = (statistics.fmean(eng) - bound * statistics.fmean(base)) ** 2
                assert lhs == pytest.approx(t * t * (ve + bound * bound * vb), rel=1e-6)
    assert checked >= 10


def test_report_out_elsewhere_and_bad_dirs(sweep_dir, tmp_path):
    target = tmp_path / "elsewhere" / "r.md"
    target.parent.mkdir()
    proc = run_report(str(sweep_dir), "--out", str(target))
    assert proc.returncode == 0, proc.stderr
    assert target.exists() and (target.parent / "summary.csv").exists()
    assert (target.parent / "charts" / "throughput_vs_workers.svg").exists()
    assert not (sweep_dir / "report.md").exists()

    # an --out that cannot be written: exit 2, one line, before any work (it was exit 1 after it)
    blocker = tmp_path / "a_file"
    blocker.write_text("mine\n")
    for bad in (blocker / "r.md", "/proc/tq-report-test/r.md"):
        proc = run_report(str(sweep_dir), "--out", str(bad))
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert blocker.read_text() == "mine\n"

    empty = tmp_path / "empty"
    empty.mkdir()
    for folder in (empty, tmp_path / "missing"):
        proc = run_report(str(folder))
        assert proc.returncode == 2
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    proc = run_report(str(blocker))     # a file given as the sweep: said so, not "no such folder"
    assert proc.returncode == 2 and "is not a folder" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert blocker.read_text() == "mine\n"


def _subset(meta, rows, **keep):
    """The fixture reduced to rows matching `keep` (axis -> list of values), as a sweep of that grid."""
    meta = json.loads(json.dumps(meta))
    for axis, values in keep.items():
        meta["grid"]["axes"][axis] = values
    rows = [r for r in rows if all(reportmod._parse_value(r[a]) in v for a, v in keep.items())]
    return meta, rows


def test_single_trial_cells_have_no_interval():
    meta, rows = reportmod.load_sweep(FIXTURE)
    rows = [r for r in rows if r["repeat"] == "0"]
    meta["grid"]["repeats"] = 1
    agg = reportmod.aggregate(meta, rows)
    for cfg in agg["configs"]:
        for key in ("throughput", "p95"):
            r = cfg["ratios"][key]
            if r["verdict"] == "no data":
                continue
            assert r["low"] is None and r["note"].startswith("n=1: no interval; the point estimate alone")
            # the fail_fast engine's rejections are seen even in one trial (the point difference decides)
            expected = "not comparable" if cfg["config"]["mode"] == "fail_fast" and cfg["config"]["clients"] == 100 \
                else "inconclusive"
            assert r["verdict"] == expected
    md = reportmod.render_markdown(meta, agg, reportmod.build_charts(meta, agg), FIXTURE, "charts", {})
    assert "cells have a single ok trial: no interval there" in md


def test_no_chart_for_an_axis_with_one_value():
    meta, rows = reportmod.load_sweep(FIXTURE)
    meta, rows = _subset(meta, rows, workers=[8], mode=["block"])
    agg = reportmod.aggregate(meta, rows)
    charts = {name: (text, caption) for name, _t, text, caption in reportmod.build_charts(meta, agg)}
    for name, axis in (("throughput_vs_workers.svg", "workers"), ("block_vs_fail_fast.svg", "mode")):
        text, caption = charts[name]
        assert text is None and caption.startswith(f"{axis} has a single value")
    assert charts["p95_vs_clients.svg"][0] is not None          # clients still has two values
    root = ET.fromstring(charts["ratio_throughput.svg"][0])
    assert len(root.findall(f".//{SVG}circle")) == 2           # one row per configuration
    md = reportmod.render_markdown(meta, agg, reportmod.build_charts(meta, agg), FIXTURE, "charts", {})
    assert "mode has a single value (block) in this grid" in md
    assert "- Throughput against workers: not drawn: workers has a single value (8)" in md


def test_default_dir_is_the_newest_sweep(tmp_path):
    for i, name in enumerate(("old", "new", "not_a_sweep")):
        (tmp_path / name).mkdir()
        if name != "not_a_sweep":
            (tmp_path / name / "sweep.json").write_text("{}")
            os.utime(tmp_path / name / "sweep.json", (1_000_000 + i, 1_000_000 + i))
    assert reporting.newest_sweep(str(tmp_path)) == str(tmp_path / "new")
    assert reporting.newest_sweep(str(tmp_path / "nothing")) is None


# ------------------------------------------------------------------ synthetic sweeps, built trial by trial

def _result(tps, p95, error_rate=0.0, latencies=None, cpu_ms=None):
    """A metrics JSON as runners.load writes it (only what the report reads)."""
    out = {"throughput_tps": tps, "error_rate": error_rate, "tasks_submitted": 100,
           "latency_ms": {"mean": p95 * 0.6, "p50": p95 * 0.5, "p95": p95, "p99": p95 * 1.2, "max": p95 * 1.5},
           "counters": {"rejected": round(100 * error_rate)}, "peak_rss_mb": 20.0,
           "process": {"cpu_ms_per_task": cpu_ms, "cpu_user_s": None, "cpu_sys_s": None}}
    if latencies is not None:
        h = LatencyHistogram()
        h.record_many(latencies)
        out["latency_histogram"] = h.to_dict()
    return out


def build_sweep(folder, axes, trials, repeats=3, meta_extra=None):
    """A sweep folder like lab.sweep writes: trials = [(config, impl, repeat, result or None, status)]."""
    from lab import grid as gridmod
    from lab import sweep as sweepmod
    grid = {"name": "synthetic", "implementations": ["baseline", "engine"], "repeats": repeats, "seed": 1,
            "timeout_s": 10, "fixed": {"count": 100}, "axes": axes}
    os.makedirs(folder / "trials")
    records = {}
    for i, (config, impl, repeat, result, status) in enumerate(trials):
        rec = {"id": f"t{i:04d}", "order": i, "impl": impl, "repeat": repeat, "config_id": gridmod.config_id(config),
               "config": config, "status": status, "params": dict(config, seed=repeat), "result": result,
               "returncode": 0, "stderr_tail": "boom\n" if status != "ok" else "", "wall_s": 0.5,
               "load_before": [0.25, 0.5, 0.5], "load_after": [0.75, 0.5, 0.5]}
        records[rec["id"]] = rec
        (folder / "trials" / f"{rec['id']}.json").write_text(json.dumps(rec))
    meta = {"grid": grid, "started_at": "2026-12-01T00:00:00+00:00",
            "machine": {"platform": "Linux-test", "machine": "x86_64", "cpu_model": "Test CPU 9000", "cpu_count": 2,
                        "cpu_usable": 2, "memory_total_mb": 4096.0, "load_average": [0.1, 0.2, 0.3]}}
    meta.update(meta_extra or {})
    (folder / "sweep.json").write_text(json.dumps(meta))
    (folder / "trials.csv").write_text(sweepmod.csv_text(list(axes), records.values()))
    return folder


def _both(config, engine, baseline):
    """Trials of one configuration: engine and baseline results per repeat."""
    out = []
    for repeat, (e, b) in enumerate(zip(engine, baseline, strict=True)):
        out += [(config, "baseline", repeat, b, "ok"), (config, "engine", repeat, e, "ok")]
    return out


def _report(folder):
    out = reportmod.write_report(str(folder))
    return (folder / "report.md").read_text(), out["aggregate"], read_csv(out["summary"])


def test_a_non_finite_metric_fails_its_trial_and_n_printed_is_n_used(tmp_path):
    config = {"workers": 8}
    engine = [_result(400.0, 50.0), _result(math.nan, 52.0), _result(410.0, 51.0)]
    baseline = [_result(100.0, 250.0), _result(101.0, 251.0), _result(99.0, 249.0)]
    md, agg, summary = _report(build_sweep(tmp_path / "s", {"workers": [8]}, _both(config, engine, baseline)))
    cfg = agg["configs"][0]
    assert cfg["cells"]["engine"]["n"] == 2 and cfg["cells"]["engine"]["throughput_tps"]["n"] == 2
    assert cfg["cells"]["engine"]["latency_p95_ms"]["n"] == 2       # the NaN trial is out of every figure
    row = next(line for line in md.splitlines() if line.startswith("| 8 | 3/2 |"))
    assert "**met**" in row
    assert "## Failed trials" in md and "| invalid |" in md and "throughput_tps = nan" in md
    assert agg["counts"] == {"ok": 5, "invalid": 1}
    assert {r["impl"]: r["n"] for r in summary} == {"baseline": "3", "engine": "2"}


def test_zero_variance_cells_get_no_interval_and_zero_means_are_data(tmp_path):
    flat, zero = {"workers": 2}, {"workers": 8}
    trials = _both(flat, [_result(400.0, 50.0)] * 3, [_result(100.0, 250.0)] * 3)
    trials += _both(zero, [_result(400.0, 50.0, 0.0), _result(410.0, 52.0), _result(405.0, 51.0)],
                    [_result(0.0, 250.0, 1.0), _result(0.0, 251.0, 1.0), _result(0.0, 252.0, 1.0)])
    md, agg, _summary = _report(build_sweep(tmp_path / "s", {"workers": [2, 8]}, trials))
    c_flat, c_zero = agg["configs"]
    r = c_flat["ratios"]["throughput"]
    assert r["ratio"] == 4.0 and r["low"] is None and r["verdict"] == "inconclusive"      # was "[4, 4] met"
    assert c_flat["cells"]["engine"]["throughput_tps"]["ci_low"] is None
    assert "none: no spread" in md and "figures have no spread" in md
    z = c_zero["ratios"]["throughput"]
    assert z["verdict"] == "inconclusive" and "baseline's mean is 0" in z["note"]          # was "no data"
    assert c_zero["cells"]["baseline"]["throughput_tps"]["mean"] == 0.0
    assert "without data" not in md


def test_an_incomplete_sweep_says_so(tmp_path):
    config = {"workers": 2}
    trials = _both(config, [_result(300.0, 60.0)] * 2, [_result(100.0, 250.0)] * 2)
    md, agg, _summary = _report(build_sweep(tmp_path / "s", {"workers": [2, 4, 8]}, trials, repeats=2))
    assert agg["planned"] == 12 and agg["recorded"] == 4
    assert "- Trials: 4 of 12 planned have run (4 ok; none failed)" in md
    assert "**Incomplete sweep**: 8 of 12 planned trials never ran (2 of 3 configurations have no trial" in md
    proc = run_report(str(tmp_path / "s"))
    assert proc.returncode == 0 and "incomplete sweep: 4 of 12 planned trials have run" in proc.stderr


def test_pooled_percentiles_over_all_tasks_and_cpu_per_task(tmp_path):
    config = {"workers": 8}
    engine = [_result(400.0 + i, 50.0 + i, latencies=[float(v) for v in range(1 + 100 * i, 101 + 100 * i)],
                      cpu_ms=0.5 + 0.1 * i) for i in range(3)]
    baseline = [_result(100.0 + i, 250.0 + i, latencies=[250.0 + i] * 100, cpu_ms=0.3) for i in range(3)]
    md, agg, summary = _report(build_sweep(tmp_path / "s", {"workers": [8]}, _both(config, engine, baseline)))
    pooled = agg["configs"][0]["cells"]["engine"]["pooled"]
    assert pooled["tasks"] == 300
    assert pooled["p95"] == pytest.approx(percentile([float(v) for v in range(1, 301)], 95), rel=0.01)
    assert pooled["p50"] == pytest.approx(150.5, rel=0.01)
    assert agg["configs"][0]["cells"]["engine"]["cpu_ms_per_task"] == pytest.approx(0.6)
    eng = next(r for r in summary if r["impl"] == "engine")
    assert float(eng["pooled_p95_ms"]) == pytest.approx(pooled["p95"]) and eng["pooled_tasks"] == "300"
    assert float(eng["cpu_ms_per_task_mean"]) == pytest.approx(0.6)
    assert "Which P95" in md and "(300)" in md and "| 0.6 |" in md
    assert "Test CPU 9000" in md and "4.0 GiB" in md and "0.1, 0.2, 0.3" in md
    assert "1-minute load before each trial: 0.25 to 0.25" in md


def test_ratio_charts_show_intervals_the_target_and_the_verdict(tmp_path):
    a, b = {"workers": 2}, {"workers": 8}
    trials = _both(a, [_result(410.0, 50.0), _result(400.0, 51.0), _result(405.0, 52.0)],
                   [_result(100.0, 250.0), _result(101.0, 251.0), _result(99.0, 249.0)])
    trials += _both(b, [_result(900.0, 20.0, 0.5), _result(910.0, 21.0, 0.6), _result(905.0, 22.0, 0.55)],
                    [_result(100.0, 250.0), _result(101.0, 251.0), _result(99.0, 249.0)])
    _report(build_sweep(tmp_path / "s", {"workers": [2, 8]}, trials))
    root = ET.parse(tmp_path / "s" / "charts" / "ratio_throughput.svg").getroot()
    dashed = [e for e in root.iter(f"{SVG}line") if e.get("stroke-dasharray")]
    assert len(dashed) == 1                                        # the target line
    circles = root.findall(f".//{SVG}circle")
    assert len(circles) == 2
    texts = [e.text for e in root.iter(f"{SVG}text")]
    assert "met" in texts and "not comparable" in texts and "target ≥ 2" in texts
    assert sorted(c.get("fill") for c in circles) == sorted([svg.VERDICT_COLOURS["met"], "white"])


def _legend_colours(svg_text):
    elements = list(ET.fromstring(svg_text).iter())
    out = {}
    for i, e in enumerate(elements):
        if e.tag == f"{SVG}text" and i and elements[i - 1].tag == f"{SVG}rect" \
                and e.text.startswith(("engine", "baseline")):
            out[e.text] = elements[i - 1].get("fill")
    return out


def test_colours_are_fixed_per_implementation_and_mode(tmp_path):
    found = []
    for name, modes in (("one", ["block", "fail_fast"]), ("two", ["fail_fast", "block"])):
        trials = []
        for mode in modes:
            trials += _both({"mode": mode, "clients": 10}, [_result(400.0, 50.0 + i) for i in range(3)],
                            [_result(100.0 + i, 250.0) for i in range(3)])
        _report(build_sweep(tmp_path / name, {"mode": modes, "clients": [10]}, trials))
        found.append(_legend_colours((tmp_path / name / "charts" / "block_vs_fail_fast.svg").read_text()))
    assert found[0] == found[1]
    assert found[0]["engine fail_fast"] == svg.SERIES_COLOURS["engine fail_fast"]
    assert found[0]["baseline block"] == svg.SERIES_COLOURS["baseline block"]
    assert len(set(found[0].values())) == 4


def test_target_halfwidth_cells_are_reported(tmp_path):
    tight, loose = {"workers": 2}, {"workers": 8}
    trials = _both(tight, [_result(400.0 + i, 50.0 + 0.1 * i) for i in range(3)],
                   [_result(100.0 + 0.1 * i, 250.0 + 0.1 * i) for i in range(3)])
    trials += _both(loose, [_result(v, 50.0 + i) for i, v in enumerate((300.0, 500.0, 400.0))],
                    [_result(100.0, 250.0 + 10 * i) for i in range(3)])
    md, agg, summary = _report(build_sweep(tmp_path / "s", {"workers": [2, 8]}, trials,
                                           meta_extra={"adaptive": {"target_halfwidth": 0.05, "max_repeats": 3}}))
    assert [c["halfwidth_reached"] for c in agg["configs"]] == [True, False]
    assert "- Target precision ±5% (`--target-halfwidth`): both ratio intervals within it in 1 of 2 " \
           "configurations: not reached in workers=8 (n=3)." in md
    assert [r["halfwidth_reached"] for r in summary if r["impl"] == "engine"] == ["true", "false"]


def test_the_machines_single_core_speed_is_stated_with_what_it_means():
    from analysis.report import _speed_line
    line = _speed_line(31.5)
    assert line.startswith("- Single-core speed: `sum(i * i for i in range(200_000))` in 31.5 ms")
    assert "lower is faster" in line and "baseline" in line
    assert _speed_line(None) == _speed_line(float("nan")) == _speed_line(True) == "- Single-core speed: not recorded"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("damage", ["trial-result-a-list", "failed-trial-tail-a-list", "trial-order-a-dict",
                                    "trial-params-a-number", "machine-a-number", "python-null",
                                    "grid-without-name"])
def test_damaged_sweep_files_are_read_as_not_recorded_not_a_traceback(tmp_path, damage):
    """Each of these ended `lab report` in a traceback (exit 1): a trial file of the wrong shape (a damaged or
    hand-edited file: read for its histogram or its stderr, or when trials.csv is rebuilt from the trial
    files) or sweep.json's records of the wrong type. A damaged trial file is now skipped as an unreadable
    one (the sweep reruns it), a damaged record reads as not recorded, and the report is written."""
    config = {"workers": 8}
    engine = [_result(400.0, 50.0, latencies=[40.0, 50.0]), _result(410.0, 52.0), _result(405.0, 51.0)]
    baseline = [_result(100.0, 250.0), _result(101.0, 251.0), _result(99.0, 249.0)]
    trials = _both(config, engine, baseline)
    if damage == "failed-trial-tail-a-list":
        trials[1] = (config, "engine", 0, None, "error")
    folder = build_sweep(tmp_path / "s", {"workers": [8]}, trials)
    trial = folder / "trials" / "t0001.json"        # the engine's first trial
    rec = json.loads(trial.read_text())
    meta = json.loads((folder / "sweep.json").read_text())
    if damage == "trial-result-a-list":             # trials.csv has its figures; its file, no histogram
        rec["result"] = [1]
    elif damage == "failed-trial-tail-a-list":
        rec["stderr_tail"] = ["x"]
    elif damage in ("trial-order-a-dict", "trial-params-a-number"):
        rec["order" if damage == "trial-order-a-dict" else "params"] = {"a": 1} if "order" in damage else 3
        (folder / "trials.csv").write_text("id,status\n")   # rebuilt from the trial files, as after a kill
    elif damage == "machine-a-number":
        meta["machine"] = 3.5
    elif damage == "python-null":
        meta["trial_python"] = None
    else:
        del meta["grid"]["name"]
    trial.write_text(json.dumps(rec))
    (folder / "sweep.json").write_text(json.dumps(meta))
    proc = run_report(str(folder))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert (folder / "report.md").read_text().startswith("# Sweep report: ")
