# landscape-replications: one DAG, one module per paper.
#   snakemake --cores all                               # everything, quick scale
#   snakemake --cores all baldi_linear_autoencoder      # one paper
#   snakemake --cores all --config scale=paper          # the paper's scale (GPU)
import sys

from shared.config import ConfigError, available_modules, results_root, validate_all

MODULES = available_modules()
for _module in MODULES:
    configfile: f"replications/{_module}/config.yaml"

try:
    RESOLVED = validate_all(config)
except ConfigError as _err:
    print(f"error: {_err}", file=sys.stderr)
    sys.exit(2)

SCALE = config.get("scale", "quick")
RESULTS = results_root(SCALE)

include: "shared/workflow.smk"
include: "shared/data/data.smk"
for _module in MODULES:
    include: f"replications/{_module}/rules.smk"


rule all:
    default_target: True
    input:
        f"{RESULTS}/report.html"


for _module in MODULES:
    rule:
        name: _module
        input: module_outputs(_module)


rule report:
    input:
        [path for m in MODULES for path in module_outputs(m)],
        f"{RESULTS}/toolkit/figures/toolkit.json",
    output:
        report(f"{RESULTS}/report.html", category="report", caption="shared/report.rst")
    shell:
        f"{PY} -m shared.cli report --results {RESULTS} --out {{output}} --scale {SCALE}"
