"""Installable shared library of the weaklabel-bundles MONAI bundles."""

from __future__ import annotations

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def _reqs(name: str) -> list[str]:
    lines = (HERE / name).read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


setup(
    name="monai_ext",
    version="0.1.0",
    description="Weak- and no-annotation instance segmentation components for MONAI bundles",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["monai_ext", "monai_ext.*"]),
    package_data={"monai_ext": ["bundle/*.json"]},
    install_requires=_reqs("requirements.txt"),
    extras_require={
        "test": _reqs("requirements-test.txt"),
        "label": _reqs("requirements-label.txt"),  # then: pip install --no-deps monailabel==0.8.5 pydicom-seg==0.4.1
    },
    entry_points={"console_scripts": ["monai-ext=monai_ext.cli:main"]},
)
