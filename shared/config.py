"""Configuration: one scale per run, module keys namespaced, everything validated
before any computation.

Snakemake merges every ``configfile`` and every ``--config`` override into one
global dict. The layout this project uses:

    scale: quick                  # smoke | quick | paper   (top level)
    data_dir: ~/tensorflow_datasets   (top level, optional)
    <module>:                     # one namespace per replication module
      seed: 0
      scales: {smoke: {...}, quick: {...}, paper: {...}}
      <key>: <value>              # optional overrides of the chosen scale

``resolve(config, module)`` returns the module's settings for the chosen scale
with overrides applied; ``validate_all`` checks the whole dict against the
top-level schema and every module's ``schema.yaml`` (JSON Schema, with
defaults), plus each module's cross-key checks, and raises ``ConfigError``
with one message naming the key, the value and what is allowed.

Snakemake hands nested ``--config`` values over as strings
(``--config baldi_linear_autoencoder='{gd_runs: 500}'`` gives ``'500'``), so
string leaves are coerced to numbers/booleans before validation.
"""

from __future__ import annotations

import copy
import importlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
REPLICATIONS = ROOT / "replications"
SCALES = ("smoke", "quick", "paper")
TOP_LEVEL_KEYS = {
    "scale": "one of smoke, quick, paper (default quick)",
    "data_dir": "a folder path for tensorflow-datasets data (default $LANDSCAPE_DATA_DIR "
    "or ~/tensorflow_datasets)",
    "data_manual_dir": "a mapping {data set name: folder of offline source files} for preparing data",
}
MODULE_RESERVED = ("seed", "scales")


class ConfigError(ValueError):
    """A configuration problem, reported as one line without a traceback."""


def available_modules() -> list[str]:
    """Module names: folders of ``replications/`` that hold a ``config.yaml``."""
    return sorted(p.parent.name for p in REPLICATIONS.glob("*/config.yaml"))


def module_dir(module: str) -> Path:
    return REPLICATIONS / module


def load_yaml(path: Path) -> Any:
    with open(path) as fh:
        return yaml.safe_load(fh)


def coerce_scalar(value: Any) -> Any:
    """'500' -> 500, '1e-3' -> 0.001, 'true' -> True, 'null' -> None; others unchanged."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none", "~"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text.startswith("[") and text.endswith("]"):
        loaded = yaml.safe_load(text)
        if isinstance(loaded, list):
            return [coerce_scalar(v) for v in loaded]
    return value


def coerce_tree(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {k: coerce_tree(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [coerce_tree(v) for v in tree]
    return coerce_scalar(tree)


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _describe_allowed(schema: Mapping[str, Any]) -> str:
    """A short human description of what a JSON-schema node allows."""
    if "enum" in schema:
        return "one of " + ", ".join(repr(v) for v in schema["enum"])
    parts = []
    kind = schema.get("type")
    if kind:
        parts.append(kind if isinstance(kind, str) else " or ".join(kind))
    if "minimum" in schema:
        parts.append(f">= {schema['minimum']}")
    if "exclusiveMinimum" in schema:
        parts.append(f"> {schema['exclusiveMinimum']}")
    if "maximum" in schema:
        parts.append(f"<= {schema['maximum']}")
    if "exclusiveMaximum" in schema:
        parts.append(f"< {schema['exclusiveMaximum']}")
    if "minItems" in schema:
        parts.append(f"at least {schema['minItems']} items")
    if "items" in schema and isinstance(schema["items"], Mapping):
        parts.append("items: " + _describe_allowed(schema["items"]))
    if "description" in schema:
        parts.append(f"({schema['description']})")
    return " ".join(parts) if parts else "see the module's schema.yaml"


def _validator_with_defaults() -> type:
    """A Draft 2020-12 validator that also fills in schema defaults."""
    base = jsonschema.Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):  # type: ignore[no-untyped-def]
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": set_defaults})


def validate_against_schema(instance: dict[str, Any], schema: Mapping[str, Any], prefix: str) -> None:
    """Validate (and fill defaults into) ``instance``; raise one ConfigError."""
    validator = _validator_with_defaults()(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    err = errors[0]
    path = ".".join([prefix, *[str(p) for p in err.absolute_path]])
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        raise ConfigError(
            f"unknown config key '{path}.{extra[0]}' (value {err.instance[extra[0]]!r}); "
            f"allowed keys: {', '.join(allowed)}"
        )
    if err.validator == "required":
        raise ConfigError(f"missing config key under '{path}': {err.message}")
    raise ConfigError(
        f"config key '{path}' has value {err.instance!r}; allowed: {_describe_allowed(err.schema)}"
    )


def _cross_checks(module: str) -> Callable[[dict[str, Any]], None] | None:
    """The module's ``check(cfg)`` for combinations of keys, if it defines one."""
    try:
        mod = importlib.import_module(f"replications.{module}.settings")
    except ModuleNotFoundError:
        return None
    return getattr(mod, "check", None)


def resolve(config: Mapping[str, Any], module: str) -> dict[str, Any]:
    """The validated settings of ``module`` at ``config['scale']``, with ``seed`` and ``scale``."""
    scale = config.get("scale", "quick")
    if scale not in SCALES:
        raise ConfigError(f"config key 'scale' has value {scale!r}; allowed: one of {', '.join(SCALES)}")
    if module not in available_modules():
        raise ConfigError(
            f"unknown module {module!r}; allowed: {', '.join(available_modules())}"
        )
    section = coerce_tree(dict(config.get(module) or {}))
    scales = section.get("scales") or {}
    if scale not in scales:
        raise ConfigError(f"module {module!r} defines no settings for scale {scale!r}")
    overrides = {k: v for k, v in section.items() if k not in MODULE_RESERVED}
    resolved = deep_merge(scales[scale], overrides)
    schema = load_yaml(module_dir(module) / "schema.yaml")
    validate_against_schema(resolved, schema, prefix=module)
    seed = section.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"config key '{module}.seed' has value {seed!r}; allowed: integer >= 0")
    check = _cross_checks(module)
    if check is not None:
        check(resolved)
    resolved["seed"] = seed
    resolved["scale"] = scale
    resolved["data_dir"] = config.get("data_dir")
    return resolved


def validate_all(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Validate the whole merged config; return every module's resolved settings."""
    modules = available_modules()
    for key, value in config.items():
        if key not in TOP_LEVEL_KEYS and key not in modules:
            raise ConfigError(
                f"unknown config key {key!r} (value {value!r}); allowed: "
                + ", ".join(sorted(TOP_LEVEL_KEYS))
                + ", or a module name: "
                + ", ".join(modules)
            )
    data_dir = config.get("data_dir")
    if data_dir is not None and not isinstance(data_dir, str):
        raise ConfigError(f"config key 'data_dir' has value {data_dir!r}; allowed: a folder path")
    manual = config.get("data_manual_dir")
    if manual is not None:
        from shared.data.registry import DATASETS

        if not isinstance(manual, Mapping) or not all(isinstance(v, str) for v in manual.values()):
            raise ConfigError(
                f"config key 'data_manual_dir' has value {manual!r}; allowed: a mapping "
                "{data set name: folder}"
            )
        for name in manual:
            if name not in DATASETS:
                raise ConfigError(
                    f"config key 'data_manual_dir.{name}' names an unknown data set; allowed: "
                    + ", ".join(sorted(DATASETS))
                )
    return {m: resolve(config, m) for m in modules}


def module_defaults(module: str) -> dict[str, Any]:
    """The module's own ``config.yaml`` section (what Snakemake loads for it)."""
    loaded = load_yaml(module_dir(module) / "config.yaml") or {}
    if set(loaded) != {module}:
        raise ConfigError(f"{module}/config.yaml must hold exactly one top-level key, {module!r}")
    return loaded


def results_root(scale: str) -> str:
    """``results`` for the default quick scale, ``results/<scale>`` otherwise."""
    base = os.environ.get("LANDSCAPE_RESULTS", "results")
    return base if scale == "quick" else f"{base}/{scale}"
