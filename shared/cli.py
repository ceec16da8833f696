"""Command-line entry points that the Snakemake rules call (and users may call).

    python -m shared.cli validate [--config-json JSON]        # the whole config
    python -m shared.cli step MODULE STEP --scale S --outdir DIR [--config-json JSON]
    python -m shared.cli verdicts MODULE --outdir DIR
    python -m shared.cli provenance MODULE --scale S --outdir DIR [--config-json JSON]
    python -m shared.cli toolkit-check --outdir DIR
    python -m shared.cli report --results DIR --out FILE

``--config-json`` is the merged Snakemake config (module defaults + overrides);
every command validates it before computing anything. Errors in the input are
printed as one line (``error: ...``) with exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from shared.config import ConfigError, available_modules, module_defaults, resolve, validate_all


def _merged_config(config_json: str | None, scale: str | None = None) -> dict[str, Any]:
    """Module defaults from their config.yaml files, updated by ``config_json``."""
    from shared.config import deep_merge

    merged: dict[str, Any] = {}
    for module in available_modules():
        merged.update(module_defaults(module))
    if config_json:
        try:
            overrides = json.loads(config_json)
        except json.JSONDecodeError as err:
            raise ConfigError(f"--config-json is not valid JSON: {err}") from None
        merged = deep_merge(merged, overrides)
    if scale is not None:
        merged["scale"] = scale
    return merged


def _settings(module: str) -> Any:
    try:
        return importlib.import_module(f"replications.{module}.settings")
    except ModuleNotFoundError:
        return None


def _prepare_jax(module: str, threads: int | None) -> None:
    """Precision and threads must be fixed before JAX creates any array."""
    settings = _settings(module)
    if settings is not None and getattr(settings, "X64", False):
        os.environ["JAX_ENABLE_X64"] = "1"
    if threads == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (
            flags + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        ).strip()


def cmd_validate(args: argparse.Namespace) -> None:
    resolved = validate_all(_merged_config(args.config_json, args.scale))
    print(json.dumps({m: "ok" for m in resolved}))


def cmd_step(args: argparse.Namespace) -> None:
    cfg = resolve(_merged_config(args.config_json, args.scale), args.module)
    _prepare_jax(args.module, args.threads)
    steps = importlib.import_module(f"replications.{args.module}.steps").STEPS
    if args.step not in steps:
        raise ConfigError(f"unknown step {args.step!r} of {args.module}; allowed: {', '.join(steps)}")
    from shared import provenance, seeds

    outdir = Path(args.outdir)
    start = time.perf_counter()
    steps[args.step](cfg, outdir)
    provenance.write_step_record(
        outdir, args.step, cfg, wall_s=time.perf_counter() - start, streams=seeds.used_streams()
    )


def cmd_verdicts(args: argparse.Namespace) -> None:
    from shared import verdicts

    verdicts.write_module_verdicts(args.module, Path(args.outdir))


def cmd_provenance(args: argparse.Namespace) -> None:
    from shared import provenance

    cfg = resolve(_merged_config(args.config_json, args.scale), args.module)
    provenance.write_module_provenance(args.module, cfg, Path(args.outdir))


def cmd_toolkit_check(args: argparse.Namespace) -> None:
    os.environ["JAX_ENABLE_X64"] = "1"
    from shared import toolkit_check

    toolkit_check.compare(Path(args.outdir), scale=args.scale)


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
    from shared import report

    modules = args.modules or available_modules()
    report.write_report(Path(args.results), modules, Path(args.out), scale=args.scale)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="validate the whole configuration")
    p.add_argument("--config-json")
    p.add_argument("--scale")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("step", help="run one step of a module")
    p.add_argument("module")
    p.add_argument("step")
    p.add_argument("--scale", required=True)
    p.add_argument("--outdir", required=True)
    p.add_argument("--config-json")
    p.add_argument("--threads", type=int)
    p.set_defaults(func=cmd_step)

    p = sub.add_parser("verdicts", help="judge a module's claims on its measurements")
    p.add_argument("module")
    p.add_argument("--outdir", required=True)
    p.set_defaults(func=cmd_verdicts)

    p = sub.add_parser("provenance", help="write a module's provenance.json")
    p.add_argument("module")
    p.add_argument("--scale", required=True)
    p.add_argument("--outdir", required=True)
    p.add_argument("--config-json")
    p.set_defaults(func=cmd_provenance)

    p = sub.add_parser("toolkit-check", help="curvature estimators vs the exact Hessian of a small net")
    p.add_argument("--outdir", required=True)
    p.add_argument("--scale", default="quick")
    p.set_defaults(func=cmd_toolkit_check)

    p = sub.add_parser("unlock-if-stale", help="remove the lock of a killed Snakemake run")
    p.add_argument("snakemake_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_unlock_if_stale)

    p = sub.add_parser("report", help="render the HTML report")
    p.add_argument("--results", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--scale", default="quick")
    p.add_argument("--modules", nargs="*")
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
