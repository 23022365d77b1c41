"""Config: defaults, precedence (cli > env > .env > profile > defaults), refusal of bad values."""
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tqengine import Config, ConfigError, load_config


def test_defaults_match_the_issue():
    cfg = Config()
    assert (cfg.max_workers, cfg.queue_size, cfg.mode, cfg.max_attempts, cfg.chunk_size) == \
        (8, 200, "block", 3, 64 * 1024)


def test_precedence_cli_over_env_over_dotenv_over_profile(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("TQ_MAX_WORKERS=3\nTQ_QUEUE_SIZE=30\nTQ_SEED=7\nTQ_LATENCY_MS=2\n")
    env = {"TQ_QUEUE_SIZE": "40", "TQ_MODE": "fail_fast"}
    cfg = load_config(cli={"mode": "block", "max_workers": None}, profile={"latency_ms": 5.0, "seed": 1},
                      environ=env, dotenv_path=str(dotenv))
    assert cfg.max_workers == 3          # .env (cli gave None)
    assert cfg.queue_size == 40          # env beats .env
    assert cfg.mode == "block"           # cli beats env
    assert cfg.seed == 7                 # .env beats profile
    assert cfg.latency_ms == 2.0         # .env beats profile
    assert load_config(environ={}, dotenv_path=None, profile={"latency_ms": 5.0}).latency_ms == 5.0


@pytest.mark.parametrize("cli, needle", [
    ({"max_workers": -1}, "max_workers"), ({"queue_size": 0}, "queue_size"),
    ({"transient_rate": 1.5}, "transient_rate"), ({"permanent_rate": -0.1}, "permanent_rate"),
    ({"mode": "drop"}, "mode"), ({"max_attempts": 0}, "max_attempts"),
])
def test_invalid_values_are_refused_naming_the_key(cli, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(cli=cli, environ={}, dotenv_path=None)


def test_bad_environment_value_is_refused():
    with pytest.raises(ConfigError, match="queue_size"):
        load_config(environ={"TQ_QUEUE_SIZE": "lots"}, dotenv_path=None)


@pytest.mark.parametrize("args, needle", [
    (["--benchmark", "--workers", "-1"], "max_workers"),
    (["--benchmark", "--queue-size", "0"], "queue_size"),
    (["--benchmark", "--transient-rate", "2"], "transient_rate"),
])
def test_cli_refuses_bad_config_with_exit_2_and_one_line(args, needle):
    proc = subprocess.run([sys.executable, "task_queue_optimized.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr


def test_cli_env_setting_is_used(tmp_path):
    proc = subprocess.run([sys.executable, "task_queue_optimized.py", "--benchmark"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env={"TQ_MODE": "sideways", "PATH": ""})
    assert proc.returncode == 2 and "mode" in proc.stderr


@pytest.mark.parametrize("cli, key", [
    ({"log_level": 5}, "log_level"), ({"recover": "false"}, "recover"), ({"db_path": 5}, "db_path"),
    ({"enqueue_timeout_s": float("inf")}, "enqueue_timeout_s"), ({"latency_ms": float("inf")}, "latency_ms"),
    ({"latency_ms": float("nan")}, "latency_ms"),
])
def test_wrong_types_and_infinities_are_config_errors_naming_the_key(cli, key, tmp_path):
    with pytest.raises(ConfigError, match=rf"^invalid {key}: "):
        load_config(cli=cli, environ={}, dotenv_path=str(tmp_path / "none.env"))


def test_config_built_directly_is_type_checked_too():
    with pytest.raises(ConfigError, match="invalid max_workers: must be an integer"):
        Config(max_workers="8").validate()


def test_env_example_lists_every_setting_with_its_default():
    """.env.example is the user's list of knobs: every Config setting, with its default, no stale key."""
    import os

    from tqengine.config import DEFAULTS, SETTINGS
    with open(os.path.join(ROOT, ".env.example"), encoding="utf-8") as f:
        entries = dict(line.split("=", 1) for line in f.read().splitlines() if line.startswith("TQ_"))
    assert set(entries) == {f"TQ_{name.upper()}" for name in SETTINGS}
    for name in SETTINGS:
        default = DEFAULTS[name]
        assert load_config(environ={f"TQ_{name.upper()}": entries[f"TQ_{name.upper()}"]}, dotenv_path=None,
                           cli={"store_url": "http://x:1"} if name == "store" else None) is not None
        if entries[f"TQ_{name.upper()}"]:
            from tqengine.config import coerce
            assert coerce(name, entries[f"TQ_{name.upper()}"]) == default, name


def test_a_settings_own_check_runs_after_kind_and_bounds_and_only_then():
    from tqengine.config import Setting
    seen = []

    def even(value):
        seen.append(value)
        return None if value % 2 == 0 else "must be even"

    spec = Setting("int", low=0, high=10, extra=even)
    assert spec.problem(4) is None and spec.problem(3) == "must be even"
    assert spec.problem("4") == "must be an integer" and spec.problem(12).startswith("must be >= 0")
    assert seen == [4, 3], "the own check ran on a value the kind or the bounds refuse"


def test_the_lab_refuses_a_bad_image_size_through_its_setting():
    from runners.params import SPECS, check
    for bad in ("huge", "0x10", "10x", "640x480x3"):
        assert SPECS["image_size"].problem(bad) == check("image_size", bad) == \
            "must be tiny, small, large or WxH (e.g. 640x480)", bad
    assert check("image_size", "640x480") is None and check("image_size", "tiny") is None


@pytest.mark.timeout(30)
def test_a_dotenv_that_is_not_utf8_text_is_one_line_and_exit_2(tmp_path):
    """python-dotenv's UnicodeDecodeError came out of load_config, and the CLI ended in a traceback (exit 1)."""
    dotenv = tmp_path / ".env"
    dotenv.write_bytes(b"TQ_MAX_WORKERS=2\n\xff\xfe\n")
    with pytest.raises(ConfigError, match=r"cannot read .*\.env: not UTF-8 text"):
        load_config(environ={}, dotenv_path=str(dotenv))
    (tmp_path / "t.json").write_text("[]")
    proc = subprocess.run([sys.executable, f"{ROOT}/task_queue_optimized.py", "--tasks", "t.json", "--store", "s",
                           "--db", "d.db"], cwd=tmp_path, capture_output=True, text=True, timeout=25)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: cannot read .env: not UTF-8 text (byte 17)"], proc.stderr
    assert not (tmp_path / "d.db").exists()


@pytest.mark.timeout(30)
def test_a_tq_name_that_is_no_setting_is_named_not_silently_ignored(tmp_path):
    """TQ_MAX_WORKER=16 (a typo of TQ_MAX_WORKERS) was ignored without a word: the run used 8 workers. The
    command line now says so on stderr (the lab's own TQ_SCRATCH_DIR is no typo), and the run goes on."""
    (tmp_path / "t.json").write_text("[]")
    (tmp_path / ".env").write_text("TQ_QUEUE_SIZ=5\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQ_")}
    env.update(TQ_MAX_WORKER="16", TQ_SCRATCH_DIR=str(tmp_path))
    proc = subprocess.run([sys.executable, f"{ROOT}/task_queue_optimized.py", "--tasks", "t.json", "--store", "s",
                           "--db", "d.db"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=25)
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note:")]
    assert notes == ["note: TQ_MAX_WORKER (in the environment or .env) is not a setting; it is ignored",
                     "note: TQ_QUEUE_SIZ (in the environment or .env) is not a setting; it is ignored"], proc.stderr
