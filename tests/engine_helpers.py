"""Small builders shared by the engine tests."""
import os
import time

from runners.workload import ensure_objects, make_tasks
from tqengine import Config


def engine_config(tmp_path, **overrides):
    values = dict(db_path=str(tmp_path / "tasks.db"), store_root=str(tmp_path / "store"), max_workers=4,
                  queue_size=64, latency_ms=0.0, backoff_base_s=0.001, backoff_cap_s=0.01)
    values.update(overrides)
    return Config(**values)


def workload(tmp_path, count, **kwargs):
    tasks = make_tasks(count, **kwargs)
    ensure_objects(tasks, str(tmp_path / "store"))
    return tasks


def output_path(tmp_path, output_key):
    return os.path.join(str(tmp_path / "store"), *output_key.split("/"))


def wait_until(predicate, seconds=20.0):
    """Poll `predicate` every 5 ms until it holds; AssertionError after `seconds` (a deadline, not a sleep)."""
    deadline = time.perf_counter() + seconds
    while not predicate():
        if time.perf_counter() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)
