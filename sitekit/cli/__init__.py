"""The ``sitekit`` command line: a thin shell over the library.

Each job lives in its own module of this package (``sitekit/cli/<job>.py``) that defines
``register(group)``; modules are discovered at start-up, so adding a command never touches
another job's file.  Commands parse, call one library function, print.

Exit codes: 0 ok, 1 a check failed (EARL fail, robustness threshold missed), 2 bad input or
usage, 3 unexpected error (traceback only with ``--debug``), 130 interrupted.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import traceback

import click

from sitekit._version import __version__

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT, EXIT_UNEXPECTED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

_state = {"debug": False}


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="sitekit")
@click.option("--debug", is_flag=True, help="Show the full traceback of unexpected errors.")
def cli(debug: bool) -> None:
    """sitekit: harmonise multi-site imaging features, accredit PET scanners against EARL,
    and stress-test models across sites.

    \b
    Exit codes: 0 ok, 1 a check failed, 2 bad input or usage, 3 unexpected error.
    Run `sitekit COMMAND --help` for the options of a command.
    """
    _state["debug"] = debug


def _register_commands() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(cli)


_register_commands()


def _one_line(text: str) -> tuple[str, bool]:
    """The first line of a message, and whether there was more (shown with --debug)."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return (lines[0] if lines else ""), len(lines) > 1


def _usage_error(exc: click.UsageError) -> str:
    """A click usage error as one line, with the command's help to look at."""
    ctx = exc.ctx
    where = f" See '{ctx.command_path} --help'." if ctx is not None else ""
    message, _ = _one_line(exc.format_message())
    return f"Error: {message}{where}"


def _os_error(exc: OSError) -> str:
    """An operating-system error (permission, missing file, full disk) naming the file."""
    reason = exc.strerror or type(exc).__name__
    names = [str(n) for n in (getattr(exc, "filename", None), getattr(exc, "filename2", None)) if n]
    what = f" '{names[0]}'" if names else ""
    return (f"Error: cannot use{what}: {reason}. Check the path, its permissions and the free "
            "space.")


def _quiet_dask() -> None:
    """Keep Dask's scheduler and worker logs (tracebacks of failed tasks) off the console;
    ``--debug`` shows them.  Worker processes inherit the setting through the environment."""
    import logging
    import os

    os.environ.setdefault("DASK_DISTRIBUTED__LOGGING__DISTRIBUTED", "critical")
    for name in ("distributed", "distributed.worker", "distributed.scheduler", "distributed.nanny"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and map exceptions to the documented exit codes.

    0 ok, 1 a check failed (:class:`~sitekit.exceptions.CheckFailedError`), 2 bad input or
    usage (any other :class:`~sitekit.exceptions.SitekitError`, a click usage error, an
    operating-system error such as a missing permission), 3 unexpected, 130 interrupted.
    Errors are one line; ``--debug`` adds the traceback.
    """
    from sitekit.exceptions import CheckFailedError, SitekitError

    _state["debug"] = "--debug" in (argv if argv is not None else sys.argv[1:])
    if not _state["debug"]:
        _quiet_dask()
    try:
        rv = cli.main(args=argv, prog_name="sitekit", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.UsageError as exc:
        click.secho(_usage_error(exc), fg="red", err=True)
        return EXIT_BAD_INPUT
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        # click turns Ctrl-C into Abort; outputs are written whole, so none is half-written
        click.echo("Interrupted; nothing half-written was kept.", err=True)
        return EXIT_INTERRUPTED
    except CheckFailedError as exc:
        message, _ = _one_line(exc)
        click.secho(f"FAIL: {message}", fg="red", err=True)
        return EXIT_CHECK_FAILED
    except SitekitError as exc:
        if _state["debug"]:
            traceback.print_exc()
        message, more = _one_line(exc)
        click.secho(f"Error: {message}" + (" (--debug shows more)" if more and not _state["debug"]
                                           else ""), fg="red", err=True)
        return EXIT_BAD_INPUT
    except OSError as exc:
        if _state["debug"]:
            traceback.print_exc()
        click.secho(_os_error(exc), fg="red", err=True)
        return EXIT_BAD_INPUT
    except Exception as exc:  # noqa: BLE001 - the documented last resort
        if _state["debug"]:
            traceback.print_exc()
        else:
            message, _ = _one_line(exc)
            click.secho(
                f"Unexpected error: {type(exc).__name__}: {message} "
                "(run again with --debug for the traceback, and please report it)",
                fg="red",
                err=True,
            )
        return EXIT_UNEXPECTED
    return rv if isinstance(rv, int) else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
