"""``python -m api``: the gateway command alone (what ``hqstream gateway`` runs)."""

from __future__ import annotations

import typer

from api.cli import gateway

if __name__ == "__main__":
    typer.run(gateway)
