"""Tests run in float32 unless they ask for float64 (conftest.py): the marker, the fixture, and
the leak checks that keep one test's float64 out of the others."""

from __future__ import annotations

import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest_plugins = ("pytester",)

CONFTEST = Path(__file__).with_name("conftest.py")


def test_unmarked_tests_run_in_float32() -> None:
    assert jnp.zeros(1).dtype == jnp.float32
    assert jnp.asarray(np.ones(2)).dtype == jnp.float32  # numpy's float64 is narrowed


@pytest.mark.x64
def test_the_marker_gives_float64() -> None:
    assert jnp.zeros(1).dtype == jnp.float64
    assert jnp.asarray(np.ones(2)).dtype == jnp.float64


def test_the_fixture_gives_float64(x64: None) -> None:
    assert jnp.zeros(1).dtype == jnp.float64


def test_a_function_jitted_in_float64_retraces_in_float32() -> None:
    f = jax.jit(lambda x: x + jnp.ones(1))
    with jax.enable_x64(True):
        assert f(np.zeros(1)).dtype == jnp.float64
    assert f(np.zeros(1)).dtype == jnp.float32


def test_leaks_are_caught_and_do_not_spread(pytester: pytest.Pytester) -> None:
    """A module that switches x64 on at import fails to collect; a test that switches it on while it
    runs errors at teardown; the tests after either still run in float32; a marked module's
    module-scoped fixtures see float64."""
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini("[pytest]\nmarkers =\n    x64: float64\n")
    pytester.makepyfile(
        test_a_import_leak=textwrap.dedent("""
            import jax
            jax.config.update("jax_enable_x64", True)

            def test_never_runs():
                pass
        """),
        test_b_runtime_leak=textwrap.dedent("""
            import jax
            import jax.numpy as jnp

            def test_leaks():
                jax.config.update("jax_enable_x64", True)

            def test_after_the_leak():
                assert jnp.zeros(1).dtype == jnp.float32
        """),
        test_c_marked_module=textwrap.dedent("""
            import jax.numpy as jnp
            import pytest

            pytestmark = pytest.mark.x64

            @pytest.fixture(scope="module")
            def zeros():
                return jnp.zeros(1)

            def test_module_fixture_is_float64(zeros):
                assert zeros.dtype == jnp.float64 and jnp.ones(1).dtype == jnp.float64
        """),
        test_d_after=textwrap.dedent("""
            import jax.numpy as jnp

            def test_float32_again():
                assert jnp.zeros(1).dtype == jnp.float32
        """),
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--continue-on-collection-errors")
    result.assert_outcomes(passed=4, errors=2)
    result.stdout.fnmatch_lines([
        "*test_a_import_leak.py: importing it switched jax_enable_x64 on globally*",
        "*ERROR at teardown of test_leaks*",
    ])
    assert not jax.config.read("jax_enable_x64")
