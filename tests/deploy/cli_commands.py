"""The subcommands (and their options) of the ``hqstream`` typer app.

Imports ``hqstream.cli`` when it imports cleanly and asks click for the real
command tree; otherwise falls back to reading hqstream/cli.py's registrations
(``app.command(...)(func)``, ``@app.command()``, ``app.add_typer(..., name=)``)
so the manifests can be checked while the components are being written.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "hqstream" / "cli.py"


def _from_import() -> dict[str, set[str] | None] | None:
    try:
        import typer.main

        from hqstream.cli import app
    except ImportError:
        return None
    # Recent typer vendors its own click: check the shape, not the class.
    group = typer.main.get_command(app)
    assert hasattr(group, "commands"), "hqstream must be a command group"
    commands: dict[str, set[str] | None] = {}
    for name, cmd in group.commands.items():
        opts: set[str] = set()
        for param in cmd.params:
            opts |= set(param.opts) | set(param.secondary_opts)
        commands[name] = None if hasattr(cmd, "commands") else opts
    return commands


def _name_of(call: ast.Call, default: str) -> str:
    if call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str):
        return call.args[0].value
    for kw in call.keywords:
        if kw.arg == "name" and isinstance(kw.value, ast.Constant):
            return str(kw.value.value)
    return default.replace("_", "-")


def _from_source() -> dict[str, set[str] | None]:
    tree = ast.parse(CLI.read_text())
    commands: dict[str, set[str] | None] = {}
    for node in ast.walk(tree):
        # app.command(...)(func)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Call)
            and isinstance(node.func.func, ast.Attribute)
            and node.func.func.attr == "command"
            and node.args
            and isinstance(node.args[0], ast.Name)
        ):
            commands[_name_of(node.func, node.args[0].id)] = None
        # app.add_typer(sub, name="bench")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "add_typer"
        ):
            for kw in node.keywords:
                if kw.arg == "name" and isinstance(kw.value, ast.Constant):
                    commands[str(kw.value.value)] = None
        # @app.command() def func(...)
        if isinstance(node, ast.FunctionDef):
            for deco in node.decorator_list:
                if (
                    isinstance(deco, ast.Call)
                    and isinstance(deco.func, ast.Attribute)
                    and deco.func.attr == "command"
                ):
                    commands[_name_of(deco, node.name)] = None
    return commands


def subcommands() -> tuple[dict[str, set[str] | None], bool]:
    """({name: options or None when unknown}, imported?)."""
    imported = _from_import()
    if imported is not None:
        return imported, True
    return _from_source(), False
