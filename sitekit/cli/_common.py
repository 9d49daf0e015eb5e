"""Helpers shared by the command modules: options, printing, progress."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import click

from sitekit.exceptions import ValidationError

force_option = click.option("--force", is_flag=True, help="Replace existing outputs.")
seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")


def echo_warnings(caught: list[warnings.WarningMessage]) -> None:
    """Print caught library warnings as one line each."""
    seen = set()
    for w in caught:
        msg = f"Warning: {w.message}"
        if msg not in seen:
            seen.add(msg)
            click.secho(msg, fg="yellow", err=True)


@contextlib.contextmanager
def show_warnings() -> Iterator[None]:
    """Collect the library's warnings during a command and print them as one line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        try:
            yield
        finally:
            echo_warnings(caught)


@contextlib.contextmanager
def progress(description: str, total: int | None) -> Iterator[callable]:
    """A rich progress bar; yields ``advance(n=1)`` for library callbacks."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=total)

        def advance(n: int = 1) -> None:
            bar.advance(task, n)

        yield advance


def print_table(df, *, title: str | None = None, max_rows: int = 40, floatfmt: str = "{:.3f}") -> None:
    """Print a DataFrame as a rich table (rounding for display only)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in df.columns:
        table.add_column(str(col))
    for _, row in df.head(max_rows).iterrows():
        cells = []
        for v in row:
            if isinstance(v, float):
                cells.append(floatfmt.format(v))
            else:
                cells.append(str(v))
        table.add_row(*cells)
    Console().print(table)
    if len(df) > max_rows:
        click.echo(f"... {len(df) - max_rows} more rows")


def get_or_create_group(root: click.Group, name: str, help: str) -> click.Group:
    """Return the sub-group ``name`` of ``root``, creating it on first use.

    Several command modules may add commands to one group (``sitekit robustness features``
    and ``sitekit robustness run`` live in different files).
    """
    group = root.commands.get(name)
    if group is None:
        group = click.Group(name=name, help=help)
        root.add_command(group)
    return group


def split_list(value: str | None) -> list[str]:
    """Split a comma-separated option value (``"a, b"`` -> ``["a", "b"]``)."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


key_file_option = click.option(
    "--key-file", "key_file", type=click.Path(exists=True, dir_okay=False), default=None,
    help="File holding the shared secret that signs model files (HMAC-SHA256): outputs are "
         "signed with it, and input model files must carry its signature.",
)


def read_key_file(path: str | None) -> bytes | None:
    """The key in ``--key-file`` (trailing newline removed); None without the option."""
    if path is None:
        return None
    key = open(path, "rb").read().rstrip(b"\r\n")
    if not key:
        raise ValidationError(f"--key-file '{path}' is empty; put the shared secret in it.")
    return key
