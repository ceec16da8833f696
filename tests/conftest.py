"""Shared fixtures: precision, the repository root and a smoke-scale run of the whole DAG.

Precision. Tests run in float32 (JAX's default) unless they ask for float64:

- ``@pytest.mark.x64`` on a test or class, or ``pytestmark = pytest.mark.x64`` on a module, runs
  it inside ``jax.enable_x64(True)``; a marked module's module-scoped fixtures run inside it too;
- the ``x64`` fixture does the same for a single test.

Nothing may switch ``jax_enable_x64`` on globally (``jax.config.update``): a test module that does
so at import is a collection error, a test that does so while it runs errors at teardown (and the
flag is switched back off, so that the tests after it still see float32), and every test without
the marker checks that it starts in float32.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
ASK_FOR_X64 = "ask for float64 with pytest.mark.x64 or the x64 fixture instead"


def run_snakemake(args: list[str], results: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "LANDSCAPE_RESULTS": str(results)}
    return subprocess.run(
        [SNAKEMAKE, "--cores", "2", *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=timeout, check=False,
    )


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole DAG at the smoke scale, run once per test session into a temporary folder."""
    results = tmp_path_factory.mktemp("results")
    proc = run_snakemake(["--config", "scale=smoke"], results)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return results / "smoke"


# --- precision ---------------------------------------------------------------------------


def x64_enabled() -> bool:
    """Whether arrays created now default to 64 bits (the global flag or an enable_x64 context)."""
    return bool(jax.config.read("jax_enable_x64"))


def _switch_off_leaked_x64() -> bool:
    """Called where no enable_x64 context is active: True (after switching the flag back off) if
    something switched jax_enable_x64 on globally."""
    if not x64_enabled():
        return False
    jax.config.update("jax_enable_x64", False)
    return True


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):  # type: ignore[no-untyped-def]
    report = yield
    if isinstance(collector, pytest.Module) and _switch_off_leaked_x64():
        report.outcome = "failed"
        report.longrepr = f"{collector.path}: importing it switched jax_enable_x64 on globally; {ASK_FOR_X64}"
    return report


@pytest.fixture
def x64():
    """float64 for this test: arrays created inside default to float64, and params may be float64."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module", autouse=True)
def _module_precision(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """A module marked x64 runs, module-scoped fixtures included, inside enable_x64(True)."""
    if request.node.get_closest_marker("x64") is None:
        yield
        return
    with jax.enable_x64(True):
        yield
    if _switch_off_leaked_x64():
        pytest.fail(f"a test in {request.node.name} switched jax_enable_x64 on globally; {ASK_FOR_X64}",
                    pytrace=False)


@pytest.fixture(autouse=True)
def _precision(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """float64 for a test marked x64; every other test must start, and end, in float32."""
    module_marked = request.node.getparent(pytest.Module).get_closest_marker("x64") is not None
    if request.node.get_closest_marker("x64") is not None:
        with jax.enable_x64(True):
            yield
    else:
        if _switch_off_leaked_x64():
            pytest.fail(f"jax_enable_x64 was on globally before this test started; {ASK_FOR_X64}",
                        pytrace=False)
        yield
    if not module_marked and _switch_off_leaked_x64():
        pytest.fail(f"this test switched jax_enable_x64 on globally; {ASK_FOR_X64}", pytrace=False)
