"""task_queue_optimized.py --benchmark: the built-in workload through the lab's trial runner, N runs,
the figures of the median run, and the engine's targets judged with the lab's interval and verdict rule."""
import sys

from lab.engine_args import BENCHMARK_PROFILE, WORKLOAD_DEFAULTS, UsageError, check_output_path, engine_config
from lab.provenance import code_now
from runners import params as trial_params
from tqcontract.environment import REFERENCE_LOOP, process_reference_ms
from tqcontract.files import write_json
from tqcontract.metrics import ENGINE

__all__ = ["BENCHMARK_PROFILE", "run_benchmark", "benchmark_verdicts", "print_figures"]


def run_benchmark(args):
    from runners.trial import ParamError, run_trial, validate
    code = code_now()       # the code that ran, for the --json file
    for name, default in WORKLOAD_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.store_url:
        raise UsageError("--store-url is for --tasks; --benchmark starts its own server with --store-backend http")
    if args.store or args.db or args.create_objects:
        raise UsageError("--store, --db and --create-objects are for --tasks; --benchmark uses scratch files of "
                         "its own (TQ_SCRATCH_DIR chooses where)")
    if args.server_latency_ms and args.store_backend != "http":
        raise UsageError("--server-latency-ms needs --store-backend http")
    preset = trial_params.WORKLOAD_PRESETS[args.workload]
    if args.image_size is None:
        args.image_size = preset["image_size"]
    cfg = engine_config(args, {"latency_ms": preset["latency_ms"]}, benchmark=True)
    if args.json:
        check_output_path(args.json, "--json")
    for name, value, low in (("--count", args.count, 1), ("--clients", args.clients, 1),
                             ("--repeats", args.repeats, 1)):
        if value < low:
            raise UsageError(f"{name} must be >= {low} (got {value})")
    params = trial_params.from_engine_config(cfg)
    params.update(impl=ENGINE, count=args.count, clients=args.clients, duplicate_rate=args.duplicate_rate,
                  image_size=args.image_size, workload=args.workload, load=args.load, rate=args.rate,
                  store=args.store_backend or "local",
                  server_latency_ms=args.server_latency_ms or 0.0)
    try:
        params = validate(params)       # a bad value is one line, before the banner
    except ParamError as exc:
        raise UsageError(str(exc)) from None
    print(f"benchmark, workload {args.workload} ({args.image_size} sources): {args.count} tasks, {args.clients} "
          f"clients ({args.load} loop), {cfg.max_workers} workers, "
          f"queue {cfg.queue_size} ({cfg.mode}), {cfg.latency_ms:g} ms per task, store {params['store']}"
          + (f" ({params['server_latency_ms']:g} ms per request, {cfg.http_client} client)"
             if params["store"] == "http" else ""),
          file=sys.stderr)
    print(f"single-core speed: {REFERENCE_LOOP} in {process_reference_ms()} ms (lower is faster; the "
          f"engine's throughput on short tasks scales with it)", file=sys.stderr)
    results = []
    for run in range(args.repeats):
        try:
            result = run_trial(params)
        except ParamError as exc:
            raise UsageError(str(exc)) from None
        results.append(result)
        print(f"run {run + 1}/{args.repeats}: {_fmt(result['throughput_tps'], '.1f')} tasks/s, P95 "
              f"{_fmt(result['latency_ms']['p95'])} ms, error rate {_fmt(result['error_rate'], '.3f')}",
              file=sys.stderr)
    median = sorted(results, key=lambda r: r["throughput_tps"] or 0.0)[len(results) // 2]
    print(f"figures of the median run of {len(results)} (by throughput):")
    print_figures(median)
    checks = benchmark_verdicts(results, params)
    for line in checks["lines"]:
        print(line)
    if args.json:
        write_json(args.json, dict(median, benchmark={"runs": len(results), "targets": checks["targets"],
                                                      "code": code}))
        print(f"metrics written to {args.json}", file=sys.stderr)
    if all(r.get("counters", {}).get("succeeded", 0) > 0 for r in results):
        return 0
    print(f"benchmark: a run had no successful task (error rate {median.get('error_rate')}); --log-level INFO "
          f"shows each attempt's error", file=sys.stderr)
    return 1


EFFICIENCY_TARGET = 0.95


def benchmark_verdicts(results, params):
    """The engine's own targets over the runs, with the lab's interval and verdict rule (analysis.verdicts):
    efficiency >= 0.95 of the ceiling workers / service time (from 2 clients per worker: fewer cannot keep
    every worker busy), and P95 no more than 10% over the ideal
    closed-loop latency (each client waits ceil(clients / workers) service times) plus 1 ms. Neither has a
    target when the service time is 0 (the real work alone sets the pace: there is no ceiling to hold
    it to)."""
    from analysis import verdicts
    service_ms = (results[0].get("harness") or {}).get("service_time_ms") or 0.0
    lines, targets = [], {}
    if not service_ms:
        lines.append("targets: none for a run without a service time (latency 0: the real work sets the pace)")
        return {"lines": lines, "targets": targets}
    ideal = service_ms * -(-params["clients"] // params["workers"])
    p95_target = 1.1 * ideal + 1.0
    p95 = verdicts.against_target([r["latency_ms"]["p95"] for r in results], p95_target, "<=")
    if params["clients"] >= 2 * params["workers"]:
        effs = [r["efficiency"] for r in results if r.get("efficiency") is not None]
        eff = verdicts.against_target(effs, EFFICIENCY_TARGET, ">=")
        lines.append(verdicts.format_against_target("efficiency", eff))
        targets["efficiency"] = eff
    else:       # a closed loop of fewer clients leaves workers idle between a result and the next submit
        lines.append(f"efficiency: no target with {params['clients']} clients on {params['workers']} workers "
                     f"(it applies from 2 clients per worker, when the queue can keep every worker busy)")
    lines.append(verdicts.format_against_target("P95", p95, unit="ms") +
                 f"  [target: 1.1 x the ideal {ideal:g} ms (ceil(clients / workers) x {service_ms:g} ms) + 1 ms]")
    targets["p95_ms"] = p95
    return {"lines": lines, "targets": targets}


def _fmt(value, spec=".2f"):
    return "n/a" if value is None else format(value, spec)


def print_figures(m):
    lat, c, depth = m["latency_ms"], m["counters"], m["queue_depth"]
    rows = [
        ("throughput", f"{_fmt(m['throughput_tps'], '.1f')} tasks/s"
                       + (f"  (ceiling {m['ceiling_tps']:.0f}, efficiency {m['efficiency']:.3f})"
                          if m.get("ceiling_tps") else "")),
        ("latency mean", f"{_fmt(lat['mean'])} ms"),
        ("latency P50", f"{_fmt(lat['p50'])} ms"),
        ("latency P95", f"{_fmt(lat['p95'])} ms"),
        ("latency P99", f"{_fmt(lat['p99'])} ms"),
        ("error rate", f"{_fmt(m['error_rate'] * 100 if m['error_rate'] is not None else None)} %"),
        ("queue depth", f"max {_fmt(depth['max'], '.0f')}, mean {_fmt(depth['mean'], '.1f')}, "
                        f"P95 {_fmt(depth['p95'], '.0f')}"),
        ("succeeded", c.get("succeeded")), ("retries", c.get("retried")), ("rejections", c.get("rejected")),
        ("duplicates", c.get("duplicates")), ("dead letters", c.get("dead_lettered")),
        ("thread utilisation", _fmt(m.get("thread_utilization"), ".3f")),
        ("peak RSS", f"{_fmt(m.get('peak_rss_mb'), '.1f')} MB"),
        ("tasks", m["tasks_submitted"]), ("elapsed", f"{m['elapsed_s']:.3f} s"),
        ("scratch files on", (m.get("harness") or {}).get("scratch_fs") or "n/a"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


