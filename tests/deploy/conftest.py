"""Fixtures for the deployment tests: rendered overlays (no cluster needed)."""

from __future__ import annotations

import pytest

from tests.deploy.manifests import OVERLAYS, Rendered, render


@pytest.fixture(scope="session", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> Rendered:
    """Each overlay (dev, prod), rendered once per session."""
    return render(f"overlays/{request.param}")


@pytest.fixture(scope="session")
def dev() -> Rendered:
    return render("overlays/dev")


@pytest.fixture(scope="session")
def prod() -> Rendered:
    return render("overlays/prod")
