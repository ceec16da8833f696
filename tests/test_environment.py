"""The conda route (environment.yml) pins exactly the packages of requirements.lock."""

from __future__ import annotations

import yaml

from tests.conftest import ROOT


def _pins(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        name, _, version = line.strip().partition("==")
        assert version, f"unpinned requirement: {line!r}"
        out[name.lower().replace("_", "-")] = version
    return out


def test_environment_yml_matches_the_lock() -> None:
    lock = [l for l in (ROOT / "requirements.lock").read_text().splitlines() if l and not l.startswith("#")]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _pins(pip_section) == _pins(lock)
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert python == "python=3.11"


def test_every_lock_line_is_pinned() -> None:
    for name in ("requirements.lock", "requirements-tf.lock"):
        lines = [l for l in (ROOT / name).read_text().splitlines() if l and not l.startswith("#")]
        assert lines and all("==" in l for l in lines), name


def test_the_compilation_cache_is_configurable_and_can_be_switched_off(monkeypatch, tmp_path) -> None:
    from shared import cli

    monkeypatch.delenv(cli.JAX_CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cli.jax_cache_dir() == str(tmp_path / "landscape-replications" / "jax")
    monkeypatch.setenv(cli.JAX_CACHE_ENV, str(tmp_path / "mine"))
    assert cli.jax_cache_dir() == str(tmp_path / "mine")
    for off in ("off", "0", ""):
        monkeypatch.setenv(cli.JAX_CACHE_ENV, off)
        assert cli.jax_cache_dir() is None
