"""Complete the reference pages at build time (mkdocs-gen-files runs this), so that they
cannot drift from the code:

- ``reference/cli.md``: every command of the typer app ``se_search.cli:app``, with its
  ``--help`` as the program prints it (plain text: the rich boxes depend on the terminal);
- ``reference/api.md``: a mkdocstrings entry for every name ``se_search/__init__.py``
  exports, read from its ``_EXPORTS`` table.

The committed pages hold the introductions; this appends to them.
"""

from __future__ import annotations

import mkdocs_gen_files
import typer.core
import typer.main
from typer import _click

import se_search
from se_search.cli import app

#: The width the help is wrapped to: a code block of the Material theme shows 88 columns.
WIDTH = 88


def _help(command: _click.Command, ctx: _click.Context) -> str:
    """A command's ``--help`` as plain text; typer uses rich only where rich is enabled."""
    uses_rich = typer.core.HAS_RICH
    typer.core.HAS_RICH = False
    try:
        return command.get_help(ctx)
    finally:
        typer.core.HAS_RICH = uses_rich


def cli_reference() -> str:
    group = typer.main.get_command(app)
    root = _click.Context(group, info_name="se-search", terminal_width=WIDTH,
                          max_content_width=WIDTH)  # fmt: skip
    parts = ["", "## se-search", "", "```text", _help(group, root), "```"]
    for name in group.list_commands(root):  # type: ignore[attr-defined]
        command = group.get_command(root, name)  # type: ignore[attr-defined]
        ctx = _click.Context(command, info_name=name, parent=root, terminal_width=WIDTH,
                             max_content_width=WIDTH)  # fmt: skip
        parts += ["", f"## {name}", "", "```text", _help(command, ctx), "```"]
    return "\n".join(parts) + "\n"


def api_reference() -> str:
    # mkdocstrings writes each entry's heading (heading_level 2 in mkdocs.yml)
    return "".join(f"\n::: {module}.{name}\n" for name, module in se_search._EXPORTS.items())


with mkdocs_gen_files.open("reference/cli.md", "a") as page:
    page.write(cli_reference())

with mkdocs_gen_files.open("reference/api.md", "a") as page:
    page.write(api_reference())
