"""Resumable work is keyed on its settings and on the code that made it (``shared.resume``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from shared import resume


def test_resumable_folders_change_with_settings_and_code(tmp_path: Path) -> None:
    spec = {"lr": 0.1, "epochs": 3}
    assert resume.folder("checkpoints-net", spec) is None  # outside a step: nothing is kept
    with resume.workspace(tmp_path, "code-A"):
        first = resume.folder("checkpoints-net", spec)
        assert first == resume.folder("checkpoints-net", dict(spec))
        assert resume.folder("checkpoints-net", {**spec, "lr": 0.2}) != first
    with resume.workspace(tmp_path, "code-B"):
        assert resume.folder("checkpoints-net", spec) != first
    assert first is not None and first.parent == tmp_path and first.name.startswith("checkpoints-net.")


def test_a_finished_chunk_is_reused_only_for_the_same_spec_and_code(tmp_path: Path) -> None:
    calls: list[int] = []

    def compute(value: float) -> pd.DataFrame:
        calls.append(1)
        return pd.DataFrame({"x": [value]})

    with resume.workspace(tmp_path, "code-A"):
        a = resume.chunk("c", {"v": 1}, lambda: compute(1.0))
        b = resume.chunk("c", {"v": 1}, lambda: compute(99.0))  # reused: not recomputed
        resume.chunk("c", {"v": 2}, lambda: compute(2.0))
    with resume.workspace(tmp_path, "code-B"):
        resume.chunk("c", {"v": 1}, lambda: compute(1.0))
    assert a.equals(b) and len(calls) == 3
