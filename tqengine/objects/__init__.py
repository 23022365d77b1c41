"""Object stores behind one interface (`ObjectStore`): a local directory and an HTTP client; one factory.

`make_store(kind, root, url, ...)` is the only place a backend is chosen; the engine calls it with its
Config (`store`, `store_root`, `store_url`, `chunk_size`, `max_workers`, `http_client`).
"""
from __future__ import annotations

from typing import Any

from ..config import DEFAULT_HTTP_CLIENT
from ..errors import ConfigError
from .base import ObjectStore
from .local import LocalObjectStore

__all__ = ["ObjectStore", "LocalObjectStore", "make_store"]


def make_store(kind: str, root: str | None, url: str | None, chunk_size: int = 64 * 1024,
               pool_size: int = 8, client: str = DEFAULT_HTTP_CLIENT, max_read_bytes: int | None = None,
               allow_hard_links: bool = False, token: str = "", **http_options: Any) -> ObjectStore:
    """LocalObjectStore(root) for kind "local", HttpObjectStore(url) for kind "http" (root unused);
    ConfigError for anything else or a missing root/URL. pool_size = threads calling at once (the
    engine's max_workers); the HTTP store keeps 2 * pool_size connections. `client` picks the HTTP
    transport: "stdlib" (default) or "requests"; `token` (store=http) is sent as `Authorization: Bearer`.
    `max_read_bytes` bounds a source; `allow_hard_links` lets the local store read sources with other
    hard links."""
    if kind == "local":
        if not root:
            raise ConfigError("store=local needs store_root")
        return LocalObjectStore(root, chunk_size=chunk_size, max_read_bytes=max_read_bytes,
                                allow_hard_links=allow_hard_links)
    if kind == "http":
        if not url:
            raise ConfigError("store=http needs store_url (e.g. from start_server_process(...).url)")
        from .http import HttpObjectStore
        return HttpObjectStore(url, chunk_size=chunk_size, pool_size=pool_size, client=client, token=token,
                               **http_options)
    raise ConfigError(f"store must be 'local' or 'http', not {kind!r}")
