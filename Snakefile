# landscape-replications: one DAG, one module per paper.
#   snakemake --cores all                               # everything, quick scale
#   snakemake --cores all baldi_linear_autoencoder      # one paper
#   snakemake --cores all --config scale=paper          # the paper's scale (GPU)
# Every module's rules are generated from its declaration (replications/<module>/module.py)
# by shared/workflow.smk; the config is validated and resolved once, here.
import sys

from snakemake.utils import min_version

from shared.config import ConfigError, config_namespaces, default_scale, results_root, validate_all
from shared.module import all_modules, paper_modules

min_version("9.0")

MODULES = paper_modules()
KIT_MODULES = all_modules()
for _module in config_namespaces():
    configfile: f"{'shared/toolkit' if _module == 'toolkit' else 'replications/' + _module}/config.yaml"

try:
    RESOLVED = validate_all(config)
except ConfigError as _err:
    print(f"error: {_err}", file=sys.stderr)
    sys.exit(2)

SCALE = config.get("scale", default_scale())
RESULTS = results_root(SCALE)

include: "shared/data/data.smk"
include: "shared/workflow.smk"


localrules:
    all,
    report,


rule all:
    default_target: True
    input:
        f"{RESULTS}/report.html",


rule report:
    input:
        outputs=[path for m in KIT_MODULES for path in module_outputs(m)],
        benchmarks=[path for m in KIT_MODULES for path in module_benchmarks(m)],
    output:
        html=report(f"{RESULTS}/report.html", category="report", caption="shared/report.rst"),
        timings=f"{RESULTS}/timings.csv",
    log:
        f"{RESULTS}/logs/report.log",
    shell:
        f"{PY} -m shared.cli report --results {RESULTS} --out {{output.html}} --timings {{output.timings}} "
        f"--scale {SCALE} --modules {' '.join(KIT_MODULES)} --benchmarks {{input.benchmarks}} 2>&1 | tee {{log}}"
