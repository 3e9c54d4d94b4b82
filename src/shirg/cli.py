"""The `shirg` command line. Each sub-command lives in shirg/commands/<name>.py and exposes
``add_arguments(parser)`` and ``run(args) -> int``. User errors print one line and exit 2."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from shirg.errors import ShirgError

COMMANDS = {
    "select": "see which visual tokens a strategy keeps (PNG overlay + JSON)",
    "bench-select": "time scoring + merging + selection against the SigLIP forward",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shirg", description="SHIRG token selection for LaViDa")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"shirg.commands.{name.replace('-', '_')}")
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        return int(args._run(args) or 0)
    except ShirgError as e:
        print(f"shirg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
