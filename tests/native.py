"""The compiled extension for the tests of its classes: the module, or the test skipped
(failed under ``HQ_TEST_REQUIRE_NATIVE=1``, as ``make test`` and CI run)."""

from __future__ import annotations

import os
from types import ModuleType

import pytest

from schemas.native import native_module

REQUIRED = os.environ.get("HQ_TEST_REQUIRE_NATIVE") == "1"


def native_or_skip() -> ModuleType:
    module, why_not = native_module()
    if module is None:
        if REQUIRED:
            pytest.fail(f"HQ_TEST_REQUIRE_NATIVE=1 but {why_not}")
        pytest.skip(why_not)
    return module
