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
from analysis import stats
from lab import reporting
from tqcontract.metrics import canonical_impl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "sweep_small")


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
        m = re.search(rf"- Target {re.escape(label)}: (\d+) met, (\d+) not met, (\d+) inconclusive of (\d+) "
                      rf"configurations\.", md)
        assert m, label
        met, not_met, inconclusive, total = map(int, m.groups())
        assert met + not_met + inconclusive == total == 8
        tallies[label] = (met, not_met, inconclusive)
    assert tallies["throughput ratio ≥ 2"][0] >= 2 and tallies["throughput ratio ≥ 2"][1] >= 2
    assert "- Best configuration by engine throughput: workers=8" in md
    assert "## Machine and interpreter" in md and "CPython" in md
    assert "Noisy cells (CV > 10%)" in md
    assert "## Failed trials" in md and "timeout" in md
    assert "simulated hang (fixture)" in md          # last stderr line of the failed trial's record
    assert "error_rate: single value (0.05) in this grid: no table." in md
    # efficiency (throughput / ceiling) is in the per-axis and per-configuration tables; the fixture's trials
    # have no ceiling, so the cells say so with a dash
    assert "| thr. ratio | engine eff. | engine P95 ms |" in md and "| CV | eff. | P95 ms mean |" in md

    # the verdict row of the clearest configuration
    row = next(line for line in md.splitlines() if line.startswith("| 8 | 16 | block | 0.05 | 100 | local |"))
    assert row.count("**met**") == 2

    charts = re.findall(r"!\[[^\]]*\]\((charts/[^)]+\.svg)\)", md)
    assert sorted(charts) == ["charts/block_vs_fail_fast.svg", "charts/p95_vs_clients.svg",
                              "charts/throughput_vs_workers.svg"]
    for rel in charts:
        root = ET.parse(sweep_dir / rel).getroot()
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        assert root.findall(".//{http://www.w3.org/2000/svg}circle") or \
            root.findall(".//{http://www.w3.org/2000/svg}rect")

    summary = read_csv(sweep_dir / "summary.csv")
    assert len(summary) == 16
    assert {r["impl"] for r in summary} == {"baseline", "engine"}
    assert all(r["throughput_verdict"] in ("met", "not met", "inconclusive") for r in summary
               if r["impl"] == "engine")
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

    empty = tmp_path / "empty"
    empty.mkdir()
    for folder in (empty, tmp_path / "missing"):
        proc = run_report(str(folder))
        assert proc.returncode == 2
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


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
            assert r["verdict"] == "inconclusive" and r["low"] is None
            assert r["note"].startswith("n=1: no interval; the point estimate alone")
    md = reportmod.render_markdown(meta, agg, reportmod.build_charts(meta, agg), FIXTURE, "charts", {})
    assert "cells have a single ok trial: no interval there" in md


def test_single_valued_axes_still_chart(tmp_path):
    meta, rows = reportmod.load_sweep(FIXTURE)
    meta, rows = _subset(meta, rows, workers=[8], mode=["block"])
    agg = reportmod.aggregate(meta, rows)
    charts = {name: (text, caption) for name, _t, text, caption in reportmod.build_charts(meta, agg)}
    text, caption = charts["throughput_vs_workers.svg"]
    assert "single value in this grid" in caption
    root = ET.fromstring(text)
    assert len(root.findall(".//{http://www.w3.org/2000/svg}circle")) == 2      # one point per implementation
    ET.fromstring(charts["block_vs_fail_fast.svg"][0])
    md = reportmod.render_markdown(meta, agg, reportmod.build_charts(meta, agg), FIXTURE, "charts", {})
    assert "mode has a single value (block) in this grid" in md


def test_default_dir_is_the_newest_sweep(tmp_path):
    for i, name in enumerate(("old", "new", "not_a_sweep")):
        (tmp_path / name).mkdir()
        if name != "not_a_sweep":
            (tmp_path / name / "sweep.json").write_text("{}")
            os.utime(tmp_path / name / "sweep.json", (1_000_000 + i, 1_000_000 + i))
    assert reporting.newest_sweep(str(tmp_path)) == str(tmp_path / "new")
    assert reporting.newest_sweep(str(tmp_path / "nothing")) is None
