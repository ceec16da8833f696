# Rules every module shares: verdicts, provenance and the per-module target.
# Included by the top-level Snakefile before the modules' rules.smk files.
import json
import sys
from pathlib import Path

PY = sys.executable
STEP = f"{PY} -m shared.cli step --scale {SCALE}"
MODULE_STEPS = {}  # module -> its measurement steps (filled by module_verdict_rules)


def module_config_json(module):
    """The module's settings at this scale (+ overrides, seed), as JSON: a rule reruns when
    they change, and only then (editing another scale's settings reruns nothing)."""
    own = dict(config.get(module, {}))
    own["scales"] = {SCALE: (own.get("scales") or {}).get(SCALE, {})}
    section = {module: own, "scale": SCALE}
    if config.get("data_dir"):
        section["data_dir"] = config["data_dir"]
    return json.dumps(section, sort_keys=True)


def module_code(module):
    """A module's own Python files: a step reruns when its code changes (mtime)."""
    return sorted(str(p) for p in Path("replications", module).glob("*.py"))


def module_verdict_rules(module, steps):
    """Register a module's measurement steps for the shared verdict rule."""
    MODULE_STEPS[module] = list(steps)


def module_measurements(wildcards):
    return [f"{RESULTS}/{wildcards.module}/measurements/{s}.json" for s in MODULE_STEPS[wildcards.module]]


def module_outputs(module):
    out = f"{RESULTS}/{module}"
    return [f"{out}/verdicts.json", f"{out}/provenance.json"] + [
        f"{out}/figures/{step}.json" for step in MODULE_STEPS[module]
    ]


wildcard_constraints:
    module="|".join(MODULES),


rule verdicts:
    input:
        module_measurements,
        "replications/{module}/claims.yaml",
    output:
        f"{RESULTS}/{{module}}/verdicts.json"
    shell:
        f"{PY} -m shared.cli verdicts {{wildcards.module}} --outdir {RESULTS}/{{wildcards.module}}"


rule provenance:
    input:
        module_measurements
    output:
        f"{RESULTS}/{{module}}/provenance.json"
    params:
        cfg=lambda wc: module_config_json(wc.module)
    shell:
        (
        f"{PY} -m shared.cli provenance {{wildcards.module}} --scale {SCALE} "
        f"--outdir {RESULTS}/{{wildcards.module}} --config-json {{params.cfg:q}}"
    )


rule toolkit_check:
    input:
        code="shared/toolkit_check.py",
    output:
        table=f"{RESULTS}/toolkit/tables/estimators.csv",
        figures=f"{RESULTS}/toolkit/figures/toolkit.json",
        fig=report(f"{RESULTS}/toolkit/figures/toolkit.png", caption="toolkit.rst", category="toolkit"),
    benchmark:
        f"{RESULTS}/toolkit/benchmarks/toolkit_check.tsv"
    threads: workflow.cores
    shell:
        f"{PY} -m shared.cli toolkit-check --outdir {RESULTS}/toolkit --scale {SCALE}"
