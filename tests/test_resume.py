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


def test_a_changed_paper_table_changes_the_fingerprint_and_a_changed_threshold_does_not(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Steps print the paper's tables beside ours, so their numbers key the cache like code; a
    claim's rule is read only by the verdict rule and must not rerun the steps."""
    from shared.fingerprint import paper_tables_fingerprint

    def write(name: str, rho: float, threshold: float) -> str:
        path = tmp_path / name / "claims.yaml"
        path.parent.mkdir()
        path.write_text(f"claims:\n  - {{id: A, rule: {{type: at_most, quantity: q, threshold: {threshold}}}}}\n"
                        f"paper_tables:\n  t: {{source: T1, columns: [n, rho], rows: [[25, {rho}]]}}\n")
        return str(path)

    base = paper_tables_fingerprint(write("a", 0.76, 1.0))
    assert paper_tables_fingerprint(write("b", 0.76, 2.0)) == base
    assert paper_tables_fingerprint(write("c", 0.77, 1.0)) != base
    assert paper_tables_fingerprint(str(tmp_path / "none" / "claims.yaml")) == ""
