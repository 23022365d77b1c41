"""Grid validation at its edges and the trial plan's seeds and parameters (lab/grid.py), beyond the
key-naming cases of test_grid.py."""
import pytest

from lab import grid as gridmod
from runners import trial


def base(**changes):
    raw = {"name": "t", "repeats": 3, "seed": 4, "fixed": {"count": 20}, "axes": {"workers": [2, 8]}}
    raw.update(changes)
    return raw


@pytest.mark.parametrize("change, key", [
    ({"fixed": {"count": 0}}, "fixed.count"),
    ({"axes": {"clients": [0, 5]}}, "axes.clients"),
    ({"axes": {"workers": [0]}}, "axes.workers"),
    ({"axes": {"queue_size": [0]}}, "axes.queue_size"),
    ({"fixed": {"load": "open", "rate": 0}}, "fixed.rate"),
    ({"fixed": {"load": "open", "rate": -1}}, "fixed.rate"),
    ({"seed": -1}, "seed"),
    ({"seed": 2 ** 63}, "seed"),
    ({"repeats": 1001}, "repeats"),
    ({"implementations": ["engine", "engine"]}, "implementations"),
    ({"implementations": ["engine", "optimized"]}, "implementations"),   # the old name is the engine
    ({"fixed": {"count": 20, "permanent_rate": 1.01}}, "fixed.permanent_rate"),
    ({"fixed": {"count": 20, "duplicate_rate": -0.1}}, "fixed.duplicate_rate"),
    ({"fixed": {"count": 20, "latency_ms": float("nan")}}, "fixed.latency_ms"),
    ({"fixed": {"count": 20, "image_size": "huge"}}, "fixed.image_size"),
    ({"fixed": {"count": 20, "distinct_images": 0}}, "fixed.distinct_images"),
    ({"axes": {"workers": [1025]}}, "axes.workers"),                     # the engine's own bound
    ({"name": "a/b"}, "name"),                                           # it names the output folder
    ({"name": "a\\b"}, "name"),
    ({"name": ".hidden"}, "name"),
])
def test_refused_at_the_edge(change, key):
    with pytest.raises(gridmod.GridError) as info:
        gridmod.validate(base(**change))
    assert str(info.value).startswith(key + ":") or str(info.value).startswith(key + " "), str(info.value)


@pytest.mark.parametrize("change", [
    {"fixed": {"count": 1}}, {"axes": {"clients": [1]}}, {"seed": 0}, {"seed": 2 ** 63 - 1}, {"repeats": 1000},
    {"repeats": 1}, {"fixed": {"count": 20, "load": "open", "rate": 0.5}},
    {"fixed": {"count": 20, "transient_rate": 1.0, "permanent_rate": 0.0, "image_size": "1x1"}},
    {"axes": {"workers": [1, 1024]}}, {"name": "a.b-c_9"},
])
def test_allowed_at_the_edge(change):
    gridmod.validate(base(**change))


def test_workers_the_engine_refuses_are_refused_by_the_grid():
    from tqengine import Config, ConfigError
    with pytest.raises(ConfigError):
        Config(max_workers=2048).validate()
    with pytest.raises(gridmod.GridError):
        gridmod.validate(base(axes={"workers": [2048]}))


def test_plan_order_is_the_run_order():
    plan = gridmod.plan(gridmod.validate(base()))
    assert [t["order"] for t in plan] == list(range(len(plan)))


def test_implementations_come_out_in_canonical_order():
    assert gridmod.validate(base(implementations=["engine", "baseline"]))["implementations"] == ["baseline", "engine"]
    assert gridmod.validate(base(implementations=["optimized"]))["implementations"] == ["engine"]
    assert gridmod.validate(base())["implementations"] == ["baseline", "engine"]


def test_unset_parameters_run_as_the_trial_runner_would():
    """A grid that does not name a choice runs what a trial does when it is not given one."""
    g = gridmod.validate(base())
    from runners.params import DEFAULTS
    for key in ("mode", "load", "store", "http_client", "transient_rate", "permanent_rate", "duplicate_rate",
                "latency_jitter_ms", "image_size", "distinct_images", "workload", "rate", "queue_size", "clients"):
        assert g["fixed"][key] == DEFAULTS[key], key


def test_error_rate_is_the_transient_rate():
    g = gridmod.validate(base(axes={"error_rate": [0.0, 0.2]}))
    assert g["axes"] == {"transient_rate": [0.0, 0.2]} and g["fixed"]["permanent_rate"] == 0.0
    params = [t["params"] for t in gridmod.plan(g)]
    assert {p["transient_rate"] for p in params} == {0.0, 0.2} and {p["permanent_rate"] for p in params} == {0.0}


def test_each_repeat_has_its_own_seed_shared_by_its_whole_round():
    g = gridmod.validate(base(axes={"workers": [2, 8], "mode": ["block", "fail_fast"]}))
    plan = gridmod.plan(g)
    seeds = {}
    for t in plan:
        seeds.setdefault(t["repeat"], set()).add(t["params"]["seed"])
    assert all(len(s) == 1 for s in seeds.values()), seeds          # one workload per round
    assert len({next(iter(s)) for s in seeds.values()}) == 3       # a different one each round
    other = gridmod.plan(gridmod.validate(base(seed=5)))
    assert not {t["params"]["seed"] for t in other} & {t["params"]["seed"] for t in plan}


def test_trial_params_carry_the_rate_only_for_the_open_loop():
    closed = gridmod.plan(gridmod.validate(base()))
    assert all("rate" not in t["params"] for t in closed)
    opened = gridmod.plan(gridmod.validate(base(fixed={"count": 20, "load": "open", "rate": 50})))
    assert all(t["params"]["rate"] == 50 and t["params"]["load"] == "open" for t in opened)
    for t in closed:
        p = t["params"]
        assert p["impl"] == t["impl"] and p["workers"] == t["config"]["workers"] and p["count"] == 20
        trial.validate(dict(p, workdir="/tmp/x"))             # every planned trial is a valid trial


def test_axes_override_defaults_and_configurations_cover_the_product():
    g = gridmod.validate(base(axes={"workers": [2, 8], "mode": ["fail_fast", "block"], "clients": [1, 3, 9]}))
    assert "workers" not in g["fixed"] and "mode" not in g["fixed"] and "clients" not in g["fixed"]
    configs = gridmod.configurations(g)
    assert len(configs) == 12 and len({gridmod.config_id(c) for c in configs}) == 12
    assert configs[0] == {"workers": 2, "mode": "fail_fast", "clients": 1}


def test_the_grid_hash_ignores_the_description_and_repeats_only():
    g = gridmod.validate(base(description="first words"))
    assert gridmod.grid_hash(g) == gridmod.grid_hash(gridmod.validate(base(description="other words", repeats=9)))
    assert gridmod.grid_hash(g) != gridmod.grid_hash(gridmod.validate(base(name="u")))
    assert gridmod.grid_hash(g) != gridmod.grid_hash(gridmod.validate(base(implementations=["engine"])))


def test_a_rate_given_twice_under_its_two_names_is_refused():
    with pytest.raises(gridmod.GridError) as info:
        gridmod.validate(base(fixed={"count": 20, "error_rate": 0.1, "transient_rate": 0.2}))
    assert str(info.value).startswith("fixed.transient_rate:") and "twice" in str(info.value)
