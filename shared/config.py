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
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
REPLICATIONS = ROOT / "replications"
TOP_LEVEL_KEYS = {
    "scale": "one of smoke, quick, paper (default: shared/schema/base.yaml)",
    "data_dir": "a folder path for tensorflow-datasets data (default $LANDSCAPE_DATA_DIR "
    "or ~/tensorflow_datasets)",
    "data_manual_dir": "a mapping {data set name: folder of offline source files} for preparing data",
}
MODULE_RESERVED = ("seed", "scales")
TOOLKIT = "toolkit"
BASE_SCHEMA = ROOT / "shared" / "schema" / "base.yaml"
SCALES = ("smoke", "quick", "paper")  # checked against base.yaml's enum by tests/test_config.py


class ConfigError(ValueError):
    """A configuration problem, reported as one line without a traceback."""


def available_modules() -> list[str]:
    """Paper modules: folders of ``replications/`` that hold a ``config.yaml``."""
    return sorted(p.parent.name for p in REPLICATIONS.glob("*/config.yaml"))


def config_namespaces() -> list[str]:
    """Every module with settings: the papers and the toolkit check (``shared/toolkit``)."""
    return [*available_modules(), TOOLKIT]


def module_dir(module: str) -> Path:
    return ROOT / "shared" / "toolkit" if module == TOOLKIT else REPLICATIONS / module


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


def _example(schema: Mapping[str, Any], depth: int = 0) -> str:
    """A short YAML-flow example of what a JSON-schema node allows (for error messages)."""
    if "default" in schema:
        return _flow(schema["default"])
    if "enum" in schema:
        return _flow(schema["enum"][0])
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        keys = list(schema.get("required", [])) or list(props)[:3]
        if depth > 1:
            return "{...}"
        return "{" + ", ".join(f"{k}: {_example(props.get(k, {}), depth + 1)}" for k in keys) + "}"
    if kind == "array":
        item = schema.get("items")
        return "[" + (_example(item, depth + 1) if isinstance(item, Mapping) else "...") + ", ...]"
    if kind == "integer":
        return str(schema.get("minimum", 1))
    if kind == "number":
        return str(schema.get("minimum", schema.get("exclusiveMinimum", 0.1)))
    if kind == "boolean":
        return "true"
    return "..."


def _flow(value: Any) -> str:
    """A value in YAML flow style, as a user writes it in --config (shortened)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip()
    text = text.removesuffix("...").strip()
    return text if len(text) <= 160 else text[:157] + "..."


def _describe_allowed(schema: Mapping[str, Any]) -> str:
    """A short human description of what a JSON-schema node allows."""
    if "enum" in schema:
        return "one of " + ", ".join(repr(v) for v in schema["enum"])
    parts = []
    kind = schema.get("type")
    if kind:
        parts.append({"object": "a mapping", "array": "a list"}.get(kind, kind)
                     if isinstance(kind, str) else " or ".join(kind))
    if "minimum" in schema:
        parts.append(f">= {schema['minimum']}")
    if "exclusiveMinimum" in schema:
        parts.append(f"> {schema['exclusiveMinimum']}")
    if "maximum" in schema:
        parts.append(f"<= {schema['maximum']}")
    if "exclusiveMaximum" in schema:
        parts.append(f"< {schema['exclusiveMaximum']}")
    if "minItems" in schema:
        parts.append(f"with at least {schema['minItems']} item(s)")
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
                if "$ref" in sub:  # a default declared in the referenced schema (base.yaml's seed)
                    sub = validator._resolver.lookup(sub["$ref"]).contents
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": set_defaults})


def _registry() -> Any:
    """Schemas that module schemas refer to by ``$ref`` (``base.yaml``)."""
    from referencing import Registry, Resource

    base = load_yaml(BASE_SCHEMA)
    return Registry().with_resource("base.yaml", Resource.from_contents(base))


def _at(tree: Any, path: list[Any]) -> Any:
    for part in path:
        try:
            tree = tree[part]
        except (KeyError, IndexError, TypeError):
            return None
    return tree


def validate_against_schema(instance: dict[str, Any], schema: Mapping[str, Any], prefix: str,
                            example: Any = None) -> None:
    """Validate (and fill defaults into) ``instance``; raise one ConfigError.

    ``example``: a valid tree of the same shape (this scale's defaults): a wrong shape is
    answered with the expected shape and the default value at that key as an example."""
    validator = _validator_with_defaults()(schema, registry=_registry())
    errors = sorted(validator.iter_errors(instance),
                    key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
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
        raise ConfigError(f"missing config key under '{path}': {err.message}; expected e.g. {_example(err.schema)}")
    if err.validator == "propertyNames":
        raise ConfigError(f"config key '{path}' has an unknown name ({err.message}); "
                          f"allowed: {_describe_allowed(err.schema)}")
    shown = _at(example, list(err.absolute_path)) if example is not None else None
    hint = _flow(shown) if shown is not None else _example(err.schema)
    raise ConfigError(
        f"config key '{path}' has value {_flow(err.instance)}; allowed: {_describe_allowed(err.schema)}, "
        f"e.g. {hint}"
    )


def _cross_checks(module: str) -> Callable[[dict[str, Any]], None] | None:
    """The module's declared ``check(settings)`` for combinations of keys, if any."""
    from shared.module import load

    return load(module).check


def default_scale() -> str:
    return str(load_yaml(BASE_SCHEMA)["$defs"]["scale"]["default"])


def resolve(config: Mapping[str, Any], module: str) -> dict[str, Any]:
    """The validated settings of ``module`` at ``config['scale']``, with ``seed`` and ``scale``."""
    scale = config.get("scale", default_scale())
    if scale not in SCALES:
        raise ConfigError(f"config key 'scale' has value {scale!r}; allowed: one of {', '.join(SCALES)}")
    if module not in config_namespaces():
        raise ConfigError(f"unknown module {module!r}; allowed: {', '.join(config_namespaces())}")
    raw = config.get(module)
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"config key '{module}' has value {_flow(raw)}; allowed: a mapping of this module's settings, "
            f"e.g. --config {module}='{{seed: 3}}' (keys: seed, scales, or any key of one scale's settings)"
        )
    section = coerce_tree(dict(raw))
    base = load_yaml(BASE_SCHEMA)
    validate_against_schema(section, {**base["$defs"]["section"], "$defs": base["$defs"]}, prefix=module)
    scales = section["scales"]
    if scale not in scales:
        raise ConfigError(f"module {module!r} defines no settings for scale {scale!r}")
    overrides = {k: v for k, v in section.items() if k not in MODULE_RESERVED}
    resolved = deep_merge(scales[scale], overrides)
    resolved["seed"] = section["seed"]
    schema = load_yaml(module_dir(module) / "schema.yaml")
    defaults = (module_defaults(module)[module].get("scales") or {}).get(scale)  # examples of valid shapes
    validate_against_schema(resolved, schema, prefix=module, example=defaults)
    check = _cross_checks(module)
    if check is not None:
        check(resolved)
    resolved["scale"] = scale
    resolved["data_dir"] = config.get("data_dir")
    return resolved


def validate_all(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Validate the whole merged config; return every module's resolved settings, and
    check every claim reads a quantity its module's steps declare."""
    modules = config_namespaces()
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
                "{data set name: folder}, e.g. {fashion_mnist: /usr/share/datasets/fashion-mnist}"
            )
        for name in manual:
            if name not in DATASETS:
                raise ConfigError(
                    f"config key 'data_manual_dir.{name}' names an unknown data set; allowed: "
                    + ", ".join(sorted(DATASETS))
                )
    resolved = {m: resolve(config, m) for m in modules}
    check_claims()
    return resolved


def check_claims() -> None:
    """Every claim of every module reads only quantities that the module's steps declare."""
    from shared.claims import check_claims_quantities, load_claims
    from shared.module import load

    for module in available_modules():
        declared = load(module)
        if declared.has_claims:
            try:
                check_claims_quantities(load_claims(declared.path / "claims.yaml"), declared.quantities(),
                                        where=f"replications/{module}/claims.yaml")
            except ValueError as err:
                raise ConfigError(str(err)) from None


def module_defaults(module: str) -> dict[str, Any]:
    """The module's own ``config.yaml`` section (what Snakemake loads for it)."""
    loaded = load_yaml(module_dir(module) / "config.yaml") or {}
    if set(loaded) != {module}:
        raise ConfigError(f"{module}/config.yaml must hold exactly one top-level key, {module!r}")
    return loaded


def results_root(scale: str) -> str:
    """``results`` for the default scale, ``results/<scale>`` otherwise."""
    base = os.environ.get("LANDSCAPE_RESULTS", "results")
    return base if scale == default_scale() else f"{base}/{scale}"
