"""Config validation: every malformed setting stops the run before any compute with one
message naming the key, the value and what is allowed; nothing is written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shared.config import (
    ConfigError,
    coerce_tree,
    config_namespaces,
    deep_merge,
    module_defaults,
    resolve,
    validate_all,
)
from tests.conftest import ROOT, run_snakemake

BALDI = "baldi_linear_autoencoder"
KAWA = "kawaguchi_deep_linear"


def config_with(overrides: dict) -> dict:  # type: ignore[type-arg]
    """Every module's defaults, with ``overrides`` merged in as Snakemake merges --config."""
    base: dict = {}
    for module in config_namespaces():
        base.update(module_defaults(module))
    return deep_merge(base, overrides)


@pytest.mark.parametrize("module", config_namespaces())
def test_defaults_are_valid_at_every_scale(module: str) -> None:
    for scale in ("smoke", "quick", "paper"):
        cfg = resolve(config_with({"scale": scale}), module)
        assert cfg["scale"] == scale


def test_scales_and_their_default_are_written_once() -> None:
    from shared.config import BASE_SCHEMA, SCALES, default_scale, load_yaml

    scale = load_yaml(BASE_SCHEMA)["$defs"]["scale"]
    assert tuple(scale["enum"]) == SCALES and default_scale() == scale["default"] == "quick"
    assert resolve(config_with({}), BALDI)["scale"] == default_scale()


def test_seed_default_comes_from_the_base_schema() -> None:
    """No module writes its seed default itself: a config without 'seed' gets base.yaml's."""
    config = config_with({})
    del config[BALDI]["seed"]
    assert resolve(config, BALDI)["seed"] == 0
    assert resolve(config_with({BALDI: {"seed": 7}}), BALDI)["seed"] == 7


def test_overrides_from_the_command_line_are_coerced() -> None:
    assert coerce_tree({"a": "500", "b": "1e-3", "c": "true", "d": "digits", "e": "[1, 2]"}) == {
        "a": 500, "b": 0.001, "c": True, "d": "digits", "e": [1, 2]
    }
    cfg = resolve(config_with({BALDI: {"critical_points": {"p": "2"}}}), BALDI)
    assert cfg["critical_points"]["p"] == 2


GD = {"dataset": "digits", "p": 8, "runs": 10, "steps": 10, "lr": 0.4, "init_scale": 0.001}
MALFORMED = [
    ({"scale": "huge"}, ["scale", "huge", "smoke, quick, paper"]),
    ({"scael": "paper"}, ["scael", "allowed"]),
    ({"data_dir": 5}, ["data_dir", "5"]),
    ({BALDI: {"seed": -1}}, ["seed", "-1", ">= 0"]),
    ({BALDI: {"seed": "abc"}}, ["seed", "abc"]),
    ({BALDI: {"critical_points": {"p": 0}}}, ["critical_points.p", "0", ">= 1"]),
    ({BALDI: {"critical_points": {"p": 9}}}, ["critical_points.p", "9"]),
    ({BALDI: {"critical_points": {"p": "three"}}}, ["critical_points.p", "three", "integer"]),
    ({BALDI: {"critical_points": {"p": 7, "spectrum": [3, 2, 1]}}}, ["critical_points.p", "p < n"]),
    ({BALDI: {"critical_points": {"samples": 2}}}, ["samples", ">= n"]),
    ({BALDI: {"critical_points": {"spectrum": [4, 4, 2, 1]}}}, ["spectrum", "distinct"]),
    ({BALDI: {"critical_points": {"spectrum": [3, -1, 1]}}}, ["spectrum", "-1"]),
    ({BALDI: {"critical_points": {"dataset": "cifar"}}}, ["dataset", "cifar", "synthetic"]),
    ({BALDI: {"critical_points": {"colour": "red"}}}, ["colour", "allowed keys"]),
    ({BALDI: {"gradient_descent": []}}, ["gradient_descent", "at least 1"]),
    ({BALDI: {"gradient_descent": [{**GD, "runs": 0}]}}, ["runs", "0", ">= 1"]),
    ({BALDI: {"gradient_descent": [{**GD, "lr": 0.9}]}}, ["lr", "0.9", "<= 0.5"]),
    ({BALDI: {"gradient_descent": [{**GD, "lr": -1}]}}, ["lr", "-1"]),
    ({BALDI: {"gradient_descent": [{**GD, "p": 64}]}}, ["p", "64", "input dimension 64"]),
    ({BALDI: {"gradient_descent": [{**GD, "dataset": "imagenet"}]}}, ["dataset", "imagenet"]),
    ({BALDI: {"gradient_descent": [{**GD, "dataset": "synthetic"}]}}, ["spectrum", "missing"]),
    ({BALDI: {"gradient_descent": [{**GD, "steps": 1.5}]}}, ["steps", "1.5", "integer"]),
    ({BALDI: {"gradient_descent": [{k: v for k, v in GD.items() if k != "lr"}]}}, ["lr"]),
    ({KAWA: {"data": {"singular_values": [3, 2, 1, 1, 1, 1]}}}, ["singular_values", "d_x"]),
    ({KAWA: {"data": {"singular_values": [3, 3, 1]}}}, ["singular_values", "distinct"]),
    ({KAWA: {"data": {"samples": 3}}}, ["samples", ">= d_x + d_y"]),
    ({KAWA: {"degenerate_singular_values": [3, 2, 1]}}, ["degenerate_singular_values", "repeated"]),
    ({KAWA: {"ensembles": {"depths": [1, 2]}}}, ["depths", "1", ">= 2"]),
    ({KAWA: {"ensembles": {"runs": 0}}}, ["ensembles.runs", ">= 1"]),
    ({KAWA: {"ensembles": {"lr": 0}}}, ["ensembles.lr", "> 0"]),
    ({KAWA: {"ensembles": {"widths": {"wide": 0}}}}, ["widths.wide", "0", ">= 1"]),
    ({KAWA: {"escape": {"end_to_end_scales": []}}}, ["end_to_end_scales", "at least 1"]),
    ({KAWA: {"critical_points": {"width": "wide"}}}, ["critical_points.width", "wide", "integer"]),
    ({KAWA: {"grid": 5}}, ["grid", "allowed keys"]),
    ({"toolkit": {"lanczos_steps": 2}}, ["toolkit.lanczos_steps", ">= 10"]),
    # wrong shapes: one line naming the key, the expected shape and an example of it
    ({BALDI: [1, 2]}, [f"'{BALDI}'", "[1, 2]", "a mapping", "seed: 3"]),
    ({BALDI: 5}, [f"'{BALDI}'", "a mapping"]),
    ({BALDI: {"scales": {"quick": {"gradient_descent": {"runs": 0}}}}},
     [f"'{BALDI}.gradient_descent'", "{runs: 0}", "a list", "e.g. [{dataset: synthetic"]),
    ({BALDI: {"gradient_descent": {"runs": 0}}}, ["gradient_descent", "a list", "e.g. [{"]),
    ({BALDI: {"critical_points": [6, 2]}}, ["critical_points", "a mapping", "e.g. {dataset: synthetic"]),
    ({BALDI: {"scales": {"huge": {}}}}, [f"'{BALDI}.scales'", "huge", "smoke"]),
    ({BALDI: {"scales": [1]}}, [f"'{BALDI}.scales'", "a mapping"]),
    ({KAWA: {"ensembles": {"widths": [6, 3]}}}, ["ensembles.widths", "a mapping", "e.g. {"]),
    ({"data_manual_dir": "/tmp"}, ["data_manual_dir", "e.g. {fashion_mnist"]),
]


@pytest.mark.parametrize("overrides, words", MALFORMED)
def test_malformed_config_is_rejected_with_a_clear_message(overrides: dict, words: list[str]) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError) as info:
        validate_all(config_with(json.loads(json.dumps(overrides))))
    message = str(info.value)
    for word in words:
        assert word in message, (word, message)


def test_unknown_module_is_rejected() -> None:
    with pytest.raises(ConfigError, match="unknown module 'nope'.*allowed: baldi"):
        resolve(config_with({}), "nope")


@pytest.mark.parametrize(
    "args, words",
    [
        (["validate", "--config-json", json.dumps({BALDI: {"critical_points": {"p": 0}}})], ["critical_points.p"]),
        (["validate", "--config-json", "[1]"], ["--config-json", "JSON object"]),
        (["step", BALDI, "nope", "--settings-json", "{}"], ["settings"]),
        (["step", BALDI, "nope", "--settings-json", json.dumps({"seed": 0, "scale": "smoke"})],
         ["unknown step 'nope'", "critical_points"]),
    ],
)
def test_cli_prints_one_line_and_exits_2(tmp_path: Path, args: list[str], words: list[str]) -> None:
    out = ["--outdir", str(tmp_path / "out")] if args[0] == "step" else []
    proc = subprocess.run([sys.executable, "-m", "shared.cli", *args, *out], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    for word in words:
        assert word in proc.stderr, (word, proc.stderr)
    assert not (tmp_path / "out").exists()


def test_validate_prints_the_resolved_settings_the_rules_receive() -> None:
    proc = subprocess.run([sys.executable, "-m", "shared.cli", "validate", "--scale", "smoke", "--resolved"],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    resolved = json.loads(proc.stdout)
    assert resolved == validate_all(config_with({"scale": "smoke"}))


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, words",
    [
        (["--config", "scale=huge"], ["scale", "huge"]),
        (["--config", f"{BALDI}={{critical_points: {{p: 0}}}}"], ["critical_points.p", ">= 1"]),
        (["--config", "modules=all"], ["modules", "allowed"]),
        (["--config", f"{BALDI}=[1, 2]"], [f"'{BALDI}'", "a mapping"]),
        (["--config", f"{BALDI}={{scales: {{quick: {{gradient_descent: {{runs: 0}}}}}}}}"],
         ["gradient_descent", "a list", "e.g. [{"]),
    ],
)
def test_snakemake_rejects_bad_config_before_any_compute(tmp_path: Path, args: list[str], words: list[str]) -> None:
    proc = run_snakemake(args, tmp_path / "results", timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in proc.stderr, (word, proc.stderr[-2000:])
    assert not (tmp_path / "results").exists()
