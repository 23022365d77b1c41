"""What every trial now records beside the contract's metrics (runners.load): the answered tasks' latency
histogram (pooled by the report), and the process's CPU time, context switches and load around the run;
tqcontract.environment's machine description."""
import time

import pytest

from runners.adapters import BareExecutorAdapter
from runners.load import Record, build_metrics, process_block, run_load
from tqcontract import environment
from tqcontract.histogram import LatencyHistogram


def _tasks(n):
    return [{"image_key": f"k{i}", "size": "10x10", "n": i} for i in range(n)]


@pytest.mark.timeout(20)
def test_run_load_records_the_histogram_and_the_process_cost():
    result = run_load(BareExecutorAdapter(workers=4), _tasks(200), load="closed", clients=4, latency_ms=0)
    h = LatencyHistogram.from_dict(result["latency_histogram"])
    assert h.count == 200
    for q, key in ((50, "p50"), (95, "p95"), (99, "p99")):
        assert h.percentile(q) == pytest.approx(result["latency_ms"][key], rel=0.01, abs=1e-6)
    assert h.max == pytest.approx(result["latency_ms"]["max"]) and h.mean == pytest.approx(result["latency_ms"]["mean"])
    proc = result["process"]
    assert proc["cpu_user_s"] >= 0 and proc["cpu_sys_s"] >= 0
    assert proc["cpu_user_s"] + proc["cpu_sys_s"] > 0                  # 200 tasks cost some CPU
    assert isinstance(proc["ctx_voluntary"], int) and isinstance(proc["ctx_involuntary"], int)
    assert proc["cpu_ms_per_task"] == pytest.approx((proc["cpu_user_s"] + proc["cpu_sys_s"]) * 1000 / 200,
                                                    rel=1e-3, abs=1e-5)
    assert len(proc["load_before"]) == 3 and len(proc["load_after"]) == 3


def test_cpu_time_is_the_run_only():
    before = environment.process_usage()
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:     # burn 50 ms of CPU
        pass
    block = process_block(before, environment.process_usage(), 10)
    assert 0.04 <= block["cpu_user_s"] + block["cpu_sys_s"] < 1.0
    assert block["cpu_ms_per_task"] == pytest.approx((block["cpu_user_s"] + block["cpu_sys_s"]) * 100, rel=1e-3)
    unknown = process_block(None, None, 10)
    assert unknown["cpu_user_s"] is None and unknown["cpu_ms_per_task"] is None


def test_build_metrics_histogram_covers_answered_tasks_only():
    records = []
    for i in range(5):
        r = Record(i, 0.0, 0.0)
        r.end, r.status = 0.001 * (i + 1), "success" if i < 4 else "dead"
        records.append(r)
    unanswered = Record(5, 0.0, 0.0)
    unanswered.status = "timeout"
    records.append(unanswered)
    m = build_metrics(records, 0.0, "x", {}, {}, 1, 1.0)
    h = LatencyHistogram.from_dict(m["latency_histogram"])
    assert h.count == 5 and h.max == pytest.approx(5.0) and h.min == pytest.approx(1.0)
    assert m["process"]["cpu_user_s"] is None            # not measured by build_metrics alone


def test_machine_info_describes_cpu_memory_and_load():
    info = environment.machine_info()
    assert info["cpu_count"] >= 1 and info["cpu_usable"] >= 1
    assert set(info) >= {"cpu_model", "memory_total_mb", "load_average", "platform"}
    if info["memory_total_mb"] is not None:
        assert info["memory_total_mb"] > 64
    load = environment.load_average()
    assert load is None or (len(load) == 3 and all(x >= 0 for x in load))
    delta = environment.usage_delta({"cpu_user_s": 1.0, "cpu_sys_s": 0.5, "ctx_voluntary": 3, "ctx_involuntary": 1},
                                    {"cpu_user_s": 1.25, "cpu_sys_s": 0.5, "ctx_voluntary": 10, "ctx_involuntary": 2})
    assert delta == {"cpu_user_s": 0.25, "cpu_sys_s": 0.0, "ctx_voluntary": 7, "ctx_involuntary": 1}


def test_single_core_speed_is_measured_and_recorded_with_the_machine():
    from tqcontract.environment import REFERENCE_LOOP, cpu_reference_ms, machine_info
    ms = cpu_reference_ms(repeats=1)
    assert isinstance(ms, float) and 0.1 < ms < 5000, ms
    assert "range(200_000)" in REFERENCE_LOOP
    assert machine_info()["cpu_reference_ms"] > 0
