# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Put the latest benchmark tables into the README, so its "Results" figures always come from the scripts.

Each table lives between ``<!-- results:<name>:start -->`` and ``<!-- results:<name>:end -->`` markers in
the README; :func:`update_readme_section` replaces what is between them (the markers stay).
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["README", "update_readme_section"]

#: the repository README (the benchmarks run from a checkout).
README = Path(__file__).resolve().parents[2] / "README.md"


def update_readme_section(name: str, markdown: str, readme: str | Path = README) -> bool:
    """Replace the ``name`` section of ``readme`` with ``markdown``.

    Returns ``False`` (and changes nothing) when the README or its markers are missing, e.g. in an installed
    package without a checkout; raises ``ValueError`` when the markers are duplicated or out of order.
    """
    path = Path(readme)
    if not path.is_file():
        return False
    text = path.read_text()
    start, end = f"<!-- results:{name}:start -->", f"<!-- results:{name}:end -->"
    if text.count(start) != 1 or text.count(end) != 1:
        if start not in text and end not in text:
            return False
        raise ValueError(f"{path}: expected one '{start}' and one '{end}' marker")
    if text.index(start) > text.index(end):
        raise ValueError(f"{path}: '{end}' comes before '{start}'")
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    new = pattern.sub(lambda _: f"{start}\n{markdown.strip()}\n{end}", text)
    if new != text:
        path.write_text(new)
    return True
