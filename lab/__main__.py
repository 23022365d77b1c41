"""`python -m lab`: the lab's command line. Each subcommand lives in its own module, which adds its
parser through `register(subparsers)` and sets `func(args) -> exit code`."""
import argparse
import importlib
import sys

SUBCOMMAND_MODULES = ("lab.sweep", "lab.reporting", "lab.dlq", "lab.db", "lab.objects_cli")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m lab",
        description="Task Queue Lab: sweep a grid of queue settings in isolated processes, report with "
                    "confidence intervals, inspect the dead-letter queue, serve an HTTP object store.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
