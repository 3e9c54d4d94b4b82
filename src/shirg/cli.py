"""The `shirg` command line.

Each sub-command is a module shirg/commands/<name>.py (``bench_select`` -> ``bench-select``) with
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``; modules are found by
listing the package, so adding a command is adding a file. User errors print one line, exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

import shirg.commands
from shirg.errors import ShirgError
from shirg.limits import apply_limit_options, reset_limits


def command_modules() -> dict[str, str]:
    """Sub-command name -> module name, sorted."""
    names = sorted(m.name for m in pkgutil.iter_modules(shirg.commands.__path__) if not m.name.startswith("_"))
    return {n.replace("_", "-"): f"shirg.commands.{n}" for n in names}


class OneLineParser(argparse.ArgumentParser):
    """An argument error is one line on stderr (no usage block), exit code 2, like every user error."""

    def _get_values(self, action, arg_strings):
        # "--k=--" gives the option the value "--"; argparse (3.11) would drop it as the "--" separator and
        # hand the command an empty list instead of an error
        if arg_strings == ["--"] and action.option_strings and action.nargs is None:
            return self._get_value(action, "--")
        # "--model=" is not "no --model": an empty value would silently pick the default (a bundled
        # model, no API key, the current folder); only leaving the option out means the default
        if action.option_strings and action.nargs is None and len(arg_strings) == 1 and not arg_strings[0].strip():
            raise argparse.ArgumentError(action, "an empty value is not allowed (leave the option out for its default)")
        return super()._get_values(action, arg_strings)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def quiet_dependency_logs() -> None:
    """Import-time warnings of optional dependencies (torchao's missing kernels, torch's pytree
    notices) are not about the user's input; they stay out of stderr unless --verbose."""
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="shirg", description="SHIRG token selection for LaViDa")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in command_modules().items():
        module = importlib.import_module(module_name)
        # argparse %-formats help strings ("%(default)s"); a literal "%" in a HELP line must not be read as one
        p = sub.add_parser(name, help=module.HELP.replace("%", "%%"), description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args._argv = argv  # the exact invocation, recorded by commands that write run metadata
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    if not args.verbose:
        quiet_dependency_logs()
    try:
        apply_limit_options(args)
        return int(args._run(args) or 0)
    except ShirgError as e:
        print(f"shirg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # an output path that is a folder, a read-only disk, a full disk ...
        print(f"shirg {args.command}: error: {e.strerror or e} ({e.filename or 'file'}); "
              "check the path and permissions", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        reset_limits()  # --max-image-* hold for this command only (main() may run again in one process)


if __name__ == "__main__":
    sys.exit(main())
