"""Every public name of a monai_ext submodule is reachable from its subpackage (lazily imported)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import monai_ext

SUBPACKAGES = ["networks", "losses", "postprocess", "pseudo", "transforms", "engines", "handlers", "metrics", "data"]


@pytest.mark.parametrize("sub", SUBPACKAGES)
def test_subpackage_reexports_its_modules(sub: str) -> None:
    pkg = importlib.import_module(f"monai_ext.{sub}")
    owners: dict[str, list] = {}
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.ispkg or info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{pkg.__name__}.{info.name}")
        for name in getattr(mod, "__all__", []):
            owners.setdefault(name, []).append(mod)
    for name, mods in owners.items():
        if sub in ("handlers", "metrics", "data") and name not in pkg.__all__:
            continue  # eager subpackages list their main API only
        assert name in pkg.__all__, f"{mods[0].__name__}.{name} missing from monai_ext.{sub}.__all__"
        # a name two modules define differently (e.g. each network's ``split_outputs``) resolves to one of them
        assert any(getattr(pkg, name) is getattr(m, name) for m in mods)
    with pytest.raises(AttributeError, match="no attribute"):
        pkg.no_such_name  # noqa: B018


def test_dir_lists_lazy_names() -> None:
    from monai_ext import networks

    assert "COINUNet" in dir(networks) and monai_ext.networks.COINUNet.__name__ == "COINUNet"
