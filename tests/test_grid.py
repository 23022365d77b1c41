"""Grid validation (exit 2, one line naming the key) and the trial plan (seeded rounds, adjacent pairs)."""
import json
import os
import subprocess
import sys

import pytest

from lab import grid as gridmod

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def base_grid(**changes):
    raw = {"name": "t", "implementations": ["baseline", "engine"], "repeats": 2, "seed": 5,
           "timeout_s": 30, "fixed": {"count": 50, "latency_ms": 5},
           "axes": {"workers": [2, 8], "mode": ["block", "fail_fast"], "error_rate": [0, 0.05],
                    "clients": [1, 100]}}
    raw.update(changes)
    return raw


@pytest.mark.parametrize("change, key", [
    ({"colour": "red"}, "colour"),
    ({"axes": {"workers": [2], "threads": [1]}}, "axes.threads"),
    ({"fixed": {"batch": 3}}, "fixed.batch"),
    ({"axes": {"workers": ["8"]}}, "axes.workers"),
    ({"axes": {"workers": [True]}}, "axes.workers"),
    ({"axes": {"workers": 8}}, "axes.workers"),
    ({"axes": {"workers": []}}, "axes.workers"),
    ({"axes": {}}, "axes"),
    ({"axes": {"workers": [0]}}, "axes.workers"),
    ({"axes": {"error_rate": [1.5]}}, "axes.error_rate"),
    ({"axes": {"mode": ["block", "drop"]}}, "axes.mode"),
    ({"axes": {"store": ["s3"]}}, "axes.store"),
    ({"axes": {"workers": [2, 2]}}, "axes.workers"),
    ({"axes": {"error_rate": [0], "transient_rate": [0.1]}}, "axes.transient_rate"),
    ({"fixed": {"count": 10, "workers": 4}}, "axes.workers"),
    ({"fixed": {"count": -1}}, "fixed.count"),
    ({"fixed": {"latency_ms": "5"}}, "fixed.latency_ms"),
    ({"fixed": {"load": "open"}}, "rate"),
    ({"fixed": {"rate": 50}}, "rate"),
    ({"repeats": 0}, "repeats"),
    ({"repeats": 2.5}, "repeats"),
    ({"timeout_s": 0}, "timeout_s"),
    ({"timeout_s": "60"}, "timeout_s"),
    ({"implementations": ["baseline", "turbo"]}, "implementations"),
    ({"implementations": []}, "implementations"),
    ({"name": "../escape"}, "name"),
    ({"fixed": []}, "fixed"),
    ({"axes": {"workers": [2], "http_client": ["stdlib", "requests"]}}, "axes.http_client"),
    ({"axes": {"workers": [2], "server_latency_ms": [1, 5]}}, "axes.server_latency_ms"),
])
def test_validation_names_the_key(change, key):
    with pytest.raises(gridmod.GridError) as info:
        gridmod.validate(base_grid(**change))
    message = str(info.value)
    assert message.startswith(key + ":") or message.startswith(key + " "), message
    assert "\n" not in message


def test_http_only_axes_are_fine_once_a_store_is_http():
    gridmod.validate(base_grid(axes={"workers": [2], "store": ["local", "http"],
                                     "http_client": ["stdlib", "requests"]}))
    gridmod.validate(base_grid(axes={"workers": [2], "server_latency_ms": [1, 5]},
                               fixed={"count": 50, "store": "http"}))


def test_valid_grid_is_completed():
    g = gridmod.validate(base_grid())
    assert g["axes"] == {"workers": [2, 8], "mode": ["block", "fail_fast"], "transient_rate": [0, 0.05],
                         "clients": [1, 100]}
    assert g["axis_names"]["transient_rate"] == "error_rate"
    assert g["fixed"]["count"] == 50 and g["fixed"]["store"] == "local"   # given and default
    assert "workers" not in g["fixed"]
    assert g["repeats"] == 2 and g["seed"] == 5
    assert gridmod.validate(base_grid(), repeats=4, seed=9)["repeats"] == 4


def run_sweep_cli(args, **kw):
    return subprocess.run([sys.executable, "-m", "lab", "sweep", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, **kw)


@pytest.mark.parametrize("content, needle", [
    (json.dumps(base_grid(axes={"workers": []})), "axes.workers"),
    (json.dumps(base_grid(axes={"workers": ["many"]})), "axes.workers"),
    (json.dumps(base_grid(extra=1)), "extra"),
    (json.dumps(base_grid(axes={"error_rate": [2]})), "axes.error_rate"),
    ("{not json", "not valid JSON"),
])
def test_cli_bad_grid_exit_2_one_line(tmp_path, content, needle):
    grid = tmp_path / "grid.json"
    grid.write_text(content)
    out = tmp_path / "out"
    proc = run_sweep_cli([str(grid), "--out", str(out)])
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0] and "Traceback" not in proc.stderr
    assert not out.exists()   # validated before anything runs or is written


def test_cli_missing_grid_and_bad_override(tmp_path):
    proc = run_sweep_cli([str(tmp_path / "nope.json")])
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "not found" in proc.stderr
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps(base_grid()))
    proc = run_sweep_cli([str(grid), "--repeats", "0", "--out", str(tmp_path / "o")])
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: repeats:")
    proc = run_sweep_cli([str(grid), "--python", str(tmp_path / "no-python"), "--out", str(tmp_path / "o")])
    assert proc.returncode == 2 and "--python" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_plan_rounds_pairs_and_determinism():
    g = gridmod.validate(base_grid(repeats=3))
    plan = gridmod.plan(g)
    configs = gridmod.configurations(g)
    assert len(configs) == 16 and len(plan) == 16 * 2 * 3
    assert len({t["id"] for t in plan}) == len(plan)
    per_round = 16 * 2
    for r in range(3):
        chunk = plan[r * per_round:(r + 1) * per_round]
        assert {t["repeat"] for t in chunk} == {r}
        assert sorted(t["config_id"] for t in chunk[::2]) == sorted(gridmod.config_id(c) for c in configs)
        for first, second in zip(chunk[::2], chunk[1::2], strict=True):   # the pair of a configuration is adjacent
            assert first["config_id"] == second["config_id"]
            assert {first["impl"], second["impl"]} == {"baseline", "engine"}
            assert first["params"]["seed"] == second["params"]["seed"]   # same workload and faults
            assert first["params"]["transient_rate"] == first["config"]["transient_rate"]
    # shuffled: not the grid order in every round, and the pair order is not always the same
    orders = [[t["config_id"] for t in plan[r * per_round:(r + 1) * per_round:2]] for r in range(3)]
    assert orders[0] != orders[1] or orders[1] != orders[2]
    assert len({t["impl"] for t in plan[::2]}) == 2
    # deterministic for a seed, different for another
    assert [t["id"] for t in gridmod.plan(g)] == [t["id"] for t in plan]
    other = gridmod.plan(gridmod.validate(base_grid(repeats=3), seed=6))
    assert [t["config_id"] for t in other] != [t["config_id"] for t in plan]


def test_more_repeats_extend_the_same_sweep():
    g2 = gridmod.validate(base_grid(repeats=2))
    g3 = gridmod.validate(base_grid(repeats=3))
    assert gridmod.grid_hash(g2) == gridmod.grid_hash(g3)
    p2, p3 = gridmod.plan(g2), gridmod.plan(g3)
    assert [t["id"] for t in p3[:len(p2)]] == [t["id"] for t in p2]
    assert gridmod.grid_hash(gridmod.validate(base_grid(), seed=99)) != gridmod.grid_hash(g2)
    changed = base_grid(fixed={"count": 51, "latency_ms": 5})
    assert gridmod.grid_hash(gridmod.validate(changed)) != gridmod.grid_hash(g2)


@pytest.mark.parametrize("name", ["grid.json", "quick.json"])
def test_shipped_grids_are_valid_and_cover_100_clients(name):
    g = gridmod.load(os.path.join(ROOT, "experiments", name))
    assert 100 in (g["axes"].get("clients") or [g["fixed"].get("clients")])
    assert g["implementations"] == ["baseline", "engine"]
    assert set(g["axes"].get("store") or [g["fixed"]["store"]]) == {"local"}
    for key in ("workers", "queue_size", "mode", "transient_rate", "clients"):
        assert key in g["axes"], key


def test_shipped_http_grids_compare_stores_and_clients_at_one_ceiling():
    g = gridmod.load(os.path.join(ROOT, "experiments", "http.json"))
    assert g["axes"]["store"] == ["local", "http"] and 100 in g["axes"]["clients"]
    assert g["implementations"] == ["baseline", "engine"]
    fixed = g["fixed"]
    # same service time both ways: latency_ms for the local store, a GET + a PUT at the server over HTTP
    assert fixed["latency_ms"] == 2 * fixed["server_latency_ms"]
    assert len(gridmod.plan(g)) == 2 * 2 * 2 * g["repeats"]
    clients = gridmod.load(os.path.join(ROOT, "experiments", "http_clients.json"))
    assert clients["axes"]["http_client"] == ["stdlib", "requests"]
    assert clients["fixed"]["store"] == "http" and clients["fixed"]["clients"] == 100
    assert clients["fixed"]["workers"] == 8 and clients["fixed"]["server_latency_ms"] == 5
