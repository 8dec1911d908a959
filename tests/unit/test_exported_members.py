"""The public surface is explicit: `__all__` is sorted and names exactly what is exported."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("package", ["cleanroom", "partners"])
def test_all_is_sorted_and_complete(package: str) -> None:
    module = importlib.import_module(package)
    exported = module.__all__
    assert exported == sorted(exported)
    for name in exported:
        assert hasattr(module, name), name
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith(package + ".")
    }
    assert public <= set(exported), public - set(exported)
