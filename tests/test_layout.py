"""The shape of the code, checked so it stays one a newcomer can hold in their head: every
public name a module defines is in its ``__all__`` (a reader of ``__all__`` sees the module's
interface)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import boundary_unlearning

MODULES = [
    m.name
    for m in pkgutil.walk_packages(boundary_unlearning.__path__, "boundary_unlearning.")
    if not m.name.endswith("__main__")
]


@pytest.mark.parametrize("name", MODULES)
def test_all_lists_every_public_name_the_module_defines(name: str) -> None:
    module = importlib.import_module(name)
    if not hasattr(module, "__all__"):
        return  # a module without an interface (cli, _utils): nothing to list
    defined = [
        key for key, value in vars(module).items()
        if not key.startswith("_") and (inspect.isfunction(value) or inspect.isclass(value))
        and value.__module__ == name
    ]  # fmt: skip
    assert sorted(set(defined) - set(module.__all__)) == []
