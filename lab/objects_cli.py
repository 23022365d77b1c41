"""`python -m lab objects serve`: the HTTP object store server (lab.objects_server) on the command line.

    python -m lab objects serve --root data/objects [--host 127.0.0.1] [--port 0]
                                [--latency-ms MS] [--error-rate R] [--seed S] [--verbose]
                                [--allow-host NAME ...] [--token T] [--max-connections N]
                                [--allow-hard-links]

Prints `listening on http://HOST:PORT` on stdout once bound (port 0 = any free port), serves
`<root>/<bucket>/<key>` until SIGINT or SIGTERM, then exits 0. Bad arguments: one line on stderr, exit 2;
a port that cannot be bound: exit 1. The token comes from --token or else TQ_STORE_TOKEN (the environment
keeps it out of `ps`); with one, every request needs `Authorization: Bearer <token>`.
"""
import argparse
import ipaddress
import math
import os
import re
import socket
import sys

from tqengine.objects.bearer import TOKEN_RE

LOOPBACK_HINT = "binding to a non-loopback address exposes the store to the network"


def register(subparsers):
    parser = subparsers.add_parser("objects", help="the HTTP object store (serve)",
                                   description="The HTTP object store used by store=http trials.")
    sub = parser.add_subparsers(dest="objects_command", metavar="ACTION")
    serve = sub.add_parser("serve", help="serve <root>/<bucket>/<key> over HTTP until SIGINT/SIGTERM")
    serve.add_argument("--root", required=True, help="directory holding <bucket>/<key> files")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=0, help="port to bind; 0 = any free one (default)")
    serve.add_argument("--latency-ms", type=float, default=0.0,
                       help="service time of every request: answer no sooner than this many ms after the "
                            "request was read (the server's own work included; longer work is not hidden)")
    serve.add_argument("--error-rate", type=float, default=0.0,
                       help="share of requests answered 503 instead (seeded), 0..1")
    serve.add_argument("--seed", type=int, default=0, help="seed of the 503 draws")
    serve.add_argument("--verbose", action="store_true",
                       help="log every request on stderr (control characters escaped)")
    serve.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                       help="also answer requests whose Host is NAME or NAME:PORT (repeatable); by default "
                            "only localhost, 127.0.0.1, [::1] and the bound address (DNS-rebinding guard)")
    serve.add_argument("--token", default=None,
                       help="require 'Authorization: Bearer TOKEN' on every request (default: "
                            "$TQ_STORE_TOKEN, else no token; the environment keeps it out of ps)")
    serve.add_argument("--max-connections", type=int, default=None, metavar="N",
                       help="connections served at once (default 512, lowered to fit the open-file limit); "
                            "over it the longest-waiting idle connection is closed, or the new one gets 503")
    serve.add_argument("--allow-hard-links", action="store_true",
                       help="serve files that have other hard links (refused by default: a hard link made "
                            "inside the root to a file elsewhere would serve that file)")
    serve.add_argument("--exit-with-parent", action="store_true",
                       help="stop when the parent process exits (used by start_server_process)")
    serve.set_defaults(func=run_serve)
    parser.set_defaults(func=lambda args: _usage(parser))
    return parser


def _usage(parser):
    parser.print_usage(sys.stderr)
    return 2


def _fail(message, code=2):
    print(f"objects serve: {message}", file=sys.stderr)
    return code


def run_serve(args):
    from lab.objects_server import serve

    if not (0 <= args.port <= 65535):
        return _fail(f"--port must be 0..65535, not {args.port}")
    if not math.isfinite(args.latency_ms) or args.latency_ms < 0:
        return _fail(f"--latency-ms must be >= 0, not {args.latency_ms}")
    if not math.isfinite(args.error_rate) or not (0.0 <= args.error_rate <= 1.0):
        return _fail(f"--error-rate must be within 0..1, not {args.error_rate}")
    if os.path.exists(args.root) and not os.path.isdir(args.root):
        return _fail(f"--root must be a folder, not a file: {args.root}")
    if args.max_connections is not None and args.max_connections < 1:
        return _fail(f"--max-connections must be >= 1, not {args.max_connections}")
    for name in args.allow_host:
        if not re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(:[0-9]{1,5})?", name):
            return _fail(f"--allow-host must be a host name or address, optionally with :PORT, not {name!r}")
    token = args.token if args.token is not None else os.environ.get("TQ_STORE_TOKEN", "")
    if token and not TOKEN_RE.fullmatch(token):
        source = "--token" if args.token is not None else "TQ_STORE_TOKEN"
        return _fail(f"{source} must be letters, digits and -._~+/ (optionally ending in =)")
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback:
        hint = "" if token else " without a token (--token or TQ_STORE_TOKEN)"
        print(f"objects serve: warning: {LOOPBACK_HINT}{hint}", file=sys.stderr)
    try:
        return serve(args.root, host=args.host, port=args.port, latency_ms=args.latency_ms,
                     error_rate=args.error_rate, seed=args.seed, verbose=args.verbose,
                     exit_with_parent=args.exit_with_parent, allowed_hosts=args.allow_host, token=token,
                     max_connections=args.max_connections, allow_hard_links=args.allow_hard_links)
    except socket.gaierror as exc:      # a host name that does not resolve: bad input, not a failed run
        return _fail(f"--host {args.host}: {exc.strerror or exc}")
    except OSError as exc:
        return _fail(f"cannot serve on {args.host}:{args.port} from {args.root}: {exc.strerror or exc}", 1)


def main(argv=None):
    """Stand-alone entry (`python -m lab.objects_cli serve ...`), same arguments as `python -m lab objects`."""
    parser = argparse.ArgumentParser(prog="python -m lab.objects_cli")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    objects = register(sub)
    # Accept both `serve ...` and `objects serve ...`.
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] != ["objects"]:
        argv = ["objects"] + argv
    args = parser.parse_args(argv)
    del objects
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
