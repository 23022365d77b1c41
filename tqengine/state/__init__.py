"""Durable state in SQLite: tasks and their idempotency keys, dead letters, the engine lock, inspection.

- `store.StateStore`: the engine's connection (claims, transitions, group commit, recovery reads);
- `lock.DatabaseLock`: one engine per database;
- `inspect`: what tools (`python -m lab dlq`) read and change with their own connection.
"""
