"""``progress``: a tqdm bar on the first process only, never changing what is iterated."""

from __future__ import annotations

import pytest

from monai_ext.utils import progress


@pytest.mark.parametrize("env", [{}, {"WEAKLABEL_PROGRESS": "0"}, {"RANK": "1"}])
def test_progress_yields_everything(env: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    bar = progress(iter(range(5)), "work", total=5)
    assert list(bar) == [0, 1, 2, 3, 4]
    assert bar.disable  # off by the environment, or (pytest capturing) stderr is not a terminal


def test_progress_draws_on_a_terminal(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import io

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    from tqdm.auto import tqdm

    stream = Tty()
    monkeypatch.setattr("sys.stderr", stream)
    bar = progress(range(3), "work", total=3)
    assert isinstance(bar, tqdm) and not bar.disable
    list(bar)
    assert "work" in stream.getvalue()
    monkeypatch.setenv("RANK", "1")
    assert progress(range(3), "work").disable
