"""`python -m lab dlq list|requeue`: inspect the dead-letter queue and send tasks back to the queue.

Requeue marks the task `queued` again with its attempt count reset (a fresh budget of max_attempts)
and closes its dead-letter entry; the next engine start on that database (for example
`python task_queue_optimized.py --db PATH --store DIR`) runs it.
"""
import json
import sqlite3
import sys
import time

from tqengine.errors import ConfigError
from tqengine.state.store import open_readonly

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


def _rows(conn, include_requeued):
    where = "" if include_requeued else "WHERE d.requeued_at IS NULL"
    cur = conn.execute(
        "SELECT d.id, d.task_row, d.task_id, d.idempotency_key, d.error_class, d.error_message, d.attempts,"
        f" d.created_at, d.dead_at, d.requeued_at, d.payload FROM dead_letters d {where} ORDER BY d.id")
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def _when(ts):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _open(db):
    """The database connection, or None after one error line on stderr."""
    try:
        conn = open_readonly(db)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    try:
        conn.execute("SELECT 1 FROM dead_letters LIMIT 1").fetchall()
    except sqlite3.Error:
        conn.close()
        print(f"error: {db} is not a task database of the engine (no dead_letters table)", file=sys.stderr)
        return None
    return conn


def cmd_list(args):
    conn = _open(args.db)
    if conn is None:
        return 2
    with conn:
        rows = _rows(conn, args.all)
    if args.json:
        for row in rows:
            print(json.dumps(row, default=str))
        return 0
    if not rows:
        print(f"no dead letters in {args.db}")
        return 0
    print(f"{'id':>5}  {'task_id':<14} {'attempts':>8}  {'dead at':<19}  {'error':<22} message / key")
    for r in rows:
        key = (r["idempotency_key"] or "-")[:60]
        msg = (r["error_message"] or "")[:80]
        flag = " (requeued)" if r["requeued_at"] else ""
        print(f"{r['id']:>5}  {str(r['task_id'])[:14]:<14} {r['attempts']:>8}  {_when(r['dead_at']):<19}  "
              f"{(r['error_class'] or '')[:22]:<22} {msg}{flag}\n{'':>5}  key {key}")
    print(f"{len(rows)} dead letter(s)")
    return 0


def cmd_requeue(args):
    conn = _open(args.db)
    if conn is None:
        return 2
    now = time.time()
    with conn:
        open_rows = {r["id"]: r for r in _rows(conn, False)}
        ids = sorted(open_rows) if args.all else sorted(set(args.ids))
        missing = [i for i in ids if i not in open_rows]
        if missing:
            print(f"error: no open dead letter with id {missing[0]} in {args.db}", file=sys.stderr)
            return 2
        conn.execute("BEGIN IMMEDIATE")
        for i in ids:
            conn.execute("UPDATE tasks SET status='queued', attempts=0, next_attempt_at=NULL, updated_at=?,"
                         " version=version+1 WHERE id=? AND status='dead'", (now, open_rows[i]["task_row"]))
            conn.execute("UPDATE dead_letters SET requeued_at=? WHERE id=?", (now, i))
        conn.execute("COMMIT")
    print(f"requeued {len(ids)} task(s); run `python task_queue_optimized.py --db {args.db} --store DIR` "
          f"(or `--store-url URL` for an HTTP object store) to process them")
    return 0
