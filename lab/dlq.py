"""`python -m lab dlq list|requeue`: inspect the dead-letter queue and send tasks back to the queue.

Requeue marks the task `queued` again with its attempt count reset (a fresh budget of max_attempts)
and closes its dead-letter entry; the next engine start on that database (for example
`python task_queue_optimized.py --db PATH --store DIR`) runs it.
"""
import json
import sys
import time

from lab.terminal import printable
from tqengine.errors import ConfigError
from tqengine.state.inspect import dead_letters, open_database, requeue_dead_letters

DEFAULT_DB = "data/run/tasks.db"


def register(subparsers):
    p = subparsers.add_parser("dlq", help="list or requeue dead-lettered tasks",
                              description="Inspect the dead-letter queue of an engine database.")
    sub = p.add_subparsers(dest="dlq_command", metavar="ACTION")
    ls = sub.add_parser("list", help="show dead letters that have not been requeued")
    ls.add_argument("--db", default=DEFAULT_DB, help=f"engine database (default {DEFAULT_DB})")
    ls.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    ls.add_argument("--all", action="store_true", help="include entries already requeued")
    ls.set_defaults(func=cmd_list)
    rq = sub.add_parser("requeue", help="send dead-lettered tasks back to the queue")
    rq.add_argument("--db", default=DEFAULT_DB, help=f"engine database (default {DEFAULT_DB})")
    which = rq.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", type=int, action="append", dest="ids", metavar="N",
                       help="dead-letter id to requeue (repeatable)")
    which.add_argument("--all", action="store_true", help="requeue every open dead letter")
    rq.set_defaults(func=cmd_requeue)
    p.set_defaults(func=lambda args: (p.print_help(sys.stderr), 2)[1])


def _when(ts):
    """A row's time for the table: local date and time, "-" when unset, the stored value itself (shown safely)
    when it is not a time (a hand-edited row ended the listing in a traceback)."""
    if not ts:
        return "-"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    except (TypeError, ValueError, OverflowError, OSError):
        return printable(str(ts))[:19]


def _open(db):
    """The database connection, or None after one error line on stderr."""
    try:
        return open_database(db)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def cmd_list(args):
    conn = _open(args.db)
    if conn is None:
        return 2
    with conn:
        rows = dead_letters(conn, args.all)
    if args.json:
        for row in rows:
            print(json.dumps(row, default=str))
        return 0
    if not rows:
        print(f"no dead letters in {args.db}")
        return 0
    print(f"{'id':>5}  {'task_id':<14} {'attempts':>8}  {'dead at':<19}  {'error':<22} message / key")
    for r in rows:
        key = printable(r["idempotency_key"] or "-")[:60]
        msg = printable(r["error_message"] or "")[:80]
        flag = " (requeued)" if r["requeued_at"] else ""
        print(f"{r['id']:>5}  {printable(r['task_id'])[:14]:<14} {printable(str(r['attempts']))[:8]:>8}  "
              f"{_when(r['dead_at']):<19}  "
              f"{printable(r['error_class'] or '')[:22]:<22} {msg}{flag}\n{'':>5}  key {key}")
    print(f"{len(rows)} dead letter(s)")
    return 0


def cmd_requeue(args):
    conn = _open(args.db)
    if conn is None:
        return 2
    try:
        with conn:
            ids, stale = requeue_dead_letters(conn, None if args.all else args.ids)
    except ConfigError as exc:
        print(f"error: {exc} in {args.db}", file=sys.stderr)
        return 2
    if stale:
        print(f"closed {len(stale)} dead letter(s) whose task row is gone or no longer dead: "
              f"{', '.join(map(str, stale[:10]))}{' ...' if len(stale) > 10 else ''}", file=sys.stderr)
    print(f"requeued {len(ids)} task(s); run `python task_queue_optimized.py --db {args.db} --store DIR` "
          f"(or `--store-url URL` for an HTTP object store) to process them")
    return 0
