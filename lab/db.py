"""`python -m lab db prune --db PATH --older-than AGE`: delete finished task rows (and their dead letters).

Finished rows (success, dead, rejected) are what answers a duplicate submission with the stored result;
a pruned key is free again, so the same task submitted later runs again. Run it when no engine is using the
database, or set `retention_s` (TQ_RETENTION_S) and the engine prunes as it runs.
"""
import re
import sys

from tqengine.errors import ConfigError
from tqengine.state.inspect import open_database, prune_finished

DEFAULT_DB = "data/run/tasks.db"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text):
    """Seconds in '90s', '30m', '12h', '7d', '2w' or a plain number of seconds; ValueError otherwise."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw]?)\s*", text or "")
    if not match:
        raise ValueError(f"not an age like 7d, 12h or 3600: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def register(subparsers):
    p = subparsers.add_parser("db", help="maintain an engine database (prune finished rows)",
                              description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="db_command", metavar="ACTION")
    prune = sub.add_parser("prune", help="delete finished rows last changed more than AGE ago",
                           description=__doc__)
    prune.add_argument("--db", default=DEFAULT_DB, help=f"engine database (default {DEFAULT_DB})")
    prune.add_argument("--older-than", required=True, metavar="AGE",
                       help="age of the rows to delete: 90s, 30m, 12h, 7d, 2w, or seconds")
    prune.set_defaults(func=cmd_prune)
    p.set_defaults(func=lambda args: (p.print_help(sys.stderr), 2)[1])


def cmd_prune(args):
    try:
        age = parse_age(args.older_than)
        conn = open_database(args.db)
    except ValueError as exc:       # ConfigError is a ValueError too
        print(f"error: {'--older-than: ' if not isinstance(exc, ConfigError) else ''}{exc}", file=sys.stderr)
        return 2
    try:
        removed = prune_finished(conn, age)
    finally:
        conn.close()
    print(f"pruned {removed} finished task row(s) older than {args.older_than} from {args.db}")
    return 0
