"""Command-line entry points that the generated Snakemake rules call (and users may call).

    python -m shared.cli validate [--config-json JSON] [--scale S]     # the whole config
    python -m shared.cli step MODULE STEP --outdir DIR --settings-json JSON
    python -m shared.cli verdicts MODULE --out FILE --claims YAML --measurements FILE...
    python -m shared.cli provenance MODULE --out FILE --settings-json JSON --runinfo FILE... --benchmarks FILE...
    python -m shared.cli report --results DIR --out FILE --timings CSV --benchmarks FILE...

The Snakefile validates and resolves the configuration once (``shared.config.validate_all``)
and hands each rule its module's resolved settings (``--settings-json``); nothing here reads
``config.yaml`` again except ``validate``, which does what the Snakefile does. Errors in the
input are printed as one line (``error: ...``) with exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from shared.config import ConfigError, config_namespaces, deep_merge, module_defaults, validate_all


def _merged_config(config_json: str | None, scale: str | None = None) -> dict[str, Any]:
    """Module defaults from their config.yaml files, updated by ``config_json`` (as Snakemake merges)."""
    merged: dict[str, Any] = {}
    for module in config_namespaces():
        merged.update(module_defaults(module))
    if config_json:
        try:
            overrides = json.loads(config_json)
        except json.JSONDecodeError as err:
            raise ConfigError(f"--config-json is not valid JSON: {err}") from None
        if not isinstance(overrides, dict):
            raise ConfigError(
                f"--config-json has value {config_json}; allowed: a JSON object, e.g. '{{\"scale\": \"paper\"}}'"
            )
        merged = deep_merge(merged, overrides)
    if scale is not None:
        merged["scale"] = scale
    return merged


JAX_CACHE_ENV = "LANDSCAPE_JAX_CACHE"


def jax_cache_dir() -> str | None:
    """Where compiled XLA programs persist between steps and runs: ``$LANDSCAPE_JAX_CACHE``
    ("off" disables it), else ``$XDG_CACHE_HOME/landscape-replications/jax`` (``~/.cache``).

    Steps are separate processes, and many compile the same programs (a module's steps train
    the same networks): JAX's persistent compilation cache, keyed by the program, the compile
    options, the JAX/XLA versions and the device, lets the second compile be a file read.
    Results do not depend on it; it changes only where the compile time goes.
    """
    setting = os.environ.get(JAX_CACHE_ENV)
    if setting is not None:
        return None if setting.strip().lower() in ("", "off", "0", "false") else setting
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "landscape-replications", "jax")


def _prepare_jax(x64: bool, threads: int | None) -> None:
    """Precision, threads and the compilation cache must be fixed before JAX starts."""
    cache = jax_cache_dir()
    if cache is not None:
        os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", cache)
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
    if x64:
        os.environ["JAX_ENABLE_X64"] = "1"
    if threads == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (
            flags + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        ).strip()


def _settings(text: str) -> dict[str, Any]:
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"--settings-json is not valid JSON: {err}") from None
    if not isinstance(settings, dict) or "seed" not in settings or "scale" not in settings:
        raise ConfigError("--settings-json must be a module's resolved settings (with seed and scale); "
                          "get them with: python -m shared.cli validate --resolved")
    return settings


def cmd_validate(args: argparse.Namespace) -> None:
    resolved = validate_all(_merged_config(args.config_json, args.scale))
    print(json.dumps(resolved if args.resolved else {m: "ok" for m in resolved}))


def cmd_step(args: argparse.Namespace) -> None:
    from shared.module import load

    settings = _settings(args.settings_json)
    declared = load(args.module)
    declared.step(args.step)  # an unknown step stops here, before JAX starts
    _prepare_jax(declared.x64, args.threads)
    from shared import provenance, seeds
    from shared.module import run_step

    start = time.perf_counter()
    run_step(args.module, args.step, settings, Path(args.outdir))
    provenance.write_step_record(Path(args.outdir), args.step, settings, wall_s=time.perf_counter() - start,
                                 streams=seeds.used_streams())


def cmd_verdicts(args: argparse.Namespace) -> None:
    from shared import verdicts

    verdicts.write_module_verdicts(args.module, Path(args.claims), [Path(p) for p in args.measurements],
                                   Path(args.out))


def cmd_provenance(args: argparse.Namespace) -> None:
    from shared import provenance

    provenance.write_module_provenance(args.module, _settings(args.settings_json), Path(args.out),
                                       [Path(p) for p in args.runinfo], [Path(p) for p in args.benchmarks])


def cmd_unlock_if_stale(args: argparse.Namespace) -> None:
    """Remove Snakemake's directory lock when no Snakemake process works in this folder.

    A SIGKILLed run leaves its lock behind; rerunning the same command should resume,
    not stop. A lock held by a live run (another Snakemake here) is left alone.
    """
    import subprocess

    import psutil

    here = os.path.realpath(os.getcwd())
    me = os.getpid()
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            if proc.info["pid"] != me and "snakemake" in cmdline and "unlock" not in cmdline \
                    and os.path.realpath(proc.info["cwd"] or "") == here:
                print(f"a Snakemake run is active here (pid {proc.info['pid']}); lock kept")
                return
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    locks = Path(here, ".snakemake", "locks")
    if locks.is_dir() and any(locks.iterdir()):
        snakemake = Path(sys.executable).with_name("snakemake")
        extra = [a for a in args.snakemake_args if a != "--"]
        subprocess.run([str(snakemake), "--unlock", "--cores", "1", *extra],
                       check=True, capture_output=True)
        print("removed a stale Snakemake lock (left by a killed run)")


def cmd_report(args: argparse.Namespace) -> None:
    from shared import provenance, report

    timings = provenance.timings_table(Path(args.results), [Path(p) for p in args.benchmarks])
    provenance.write_timings(Path(args.timings), timings)
    report.write_report(Path(args.results), args.modules, Path(args.out), scale=args.scale, timings=timings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="validate the whole configuration")
    p.add_argument("--config-json")
    p.add_argument("--scale")
    p.add_argument("--resolved", action="store_true", help="print every module's resolved settings")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("step", help="run one declared step of a module")
    p.add_argument("module")
    p.add_argument("step")
    p.add_argument("--outdir", required=True)
    p.add_argument("--settings-json", required=True)
    p.add_argument("--threads", type=int)
    p.set_defaults(func=cmd_step)

    p = sub.add_parser("verdicts", help="judge a module's claims on its measurements")
    p.add_argument("module")
    p.add_argument("--out", required=True)
    p.add_argument("--claims", required=True)
    p.add_argument("--measurements", nargs="+", required=True)
    p.set_defaults(func=cmd_verdicts)

    p = sub.add_parser("provenance", help="write a module's provenance.json")
    p.add_argument("module")
    p.add_argument("--out", required=True)
    p.add_argument("--settings-json", required=True)
    p.add_argument("--runinfo", nargs="+", required=True)
    p.add_argument("--benchmarks", nargs="*", default=[])
    p.set_defaults(func=cmd_provenance)

    p = sub.add_parser("unlock-if-stale", help="remove the lock of a killed Snakemake run")
    p.add_argument("snakemake_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_unlock_if_stale)

    p = sub.add_parser("report", help="render the HTML report and the per-rule timings")
    p.add_argument("--results", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--timings", required=True)
    p.add_argument("--scale", required=True)
    p.add_argument("--modules", nargs="*", default=[])
    p.add_argument("--benchmarks", nargs="*", default=[])
    p.set_defaults(func=cmd_report)

    args = parser.parse_args(argv)
    try:
        args.func(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
