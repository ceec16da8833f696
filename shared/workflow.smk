# The module kit's rules: generated from every module's declaration (module.py).
# Included by the top-level Snakefile. For each module and each declared step, one rule
#   <module>__<step>: runs steps.<step>(settings) -> tables, figures, measurements, runinfo
# then per module: <module>__verdicts (claims.yaml judged on the declared measurements),
# <module>__provenance, and the target <module>. Every rule has a benchmark and a log.
import json
import sys

from shared.fingerprint import code_fingerprint
from shared.module import LIGHT_RESOURCES, load, step_outputs, step_resources

PY = sys.executable
DECLARATIONS = {m: load(m) for m in KIT_MODULES}


def settings_json(module):
    """The module's resolved settings at this scale (validated once, by the Snakefile): a rule
    reruns when they change, and only then (editing another scale's settings reruns nothing)."""
    return json.dumps(RESOLVED[module])  # key order kept: a mapping's order (e.g. widths) orders the runs


def module_dir_out(module):
    return f"{RESULTS}/{module}"


def measurement_files(module):
    return [f"{RESULTS}/{module}/measurements/{s.name}.json" for s in DECLARATIONS[module].steps]


def benchmark_file(module, name):
    return f"{RESULTS}/{module}/benchmarks/{name}.tsv"


def module_outputs(module):
    """What the target ``<module>`` asks for: every step's outputs, verdicts and provenance."""
    out = module_dir_out(module)
    files = [path for s in DECLARATIONS[module].steps for path in step_outputs(s, out).values()]
    if DECLARATIONS[module].has_claims:
        files.append(f"{out}/verdicts.json")
    return files + [f"{out}/provenance.json"]


def module_benchmarks(module):
    names = [s.name for s in DECLARATIONS[module].steps]
    if DECLARATIONS[module].has_claims:
        names.append("verdicts")
    return [benchmark_file(module, n) for n in names]


def job_threads(resources):
    """The threads of a step's job. On a cluster: its declared `cpus_per_task`. Locally at the
    paper scale: all cores, so steps run one at a time (one JAX process owns the machine and
    its GPU). Locally at the smoke and quick scales: `cpus_per_task` (1), so that `--cores N`
    runs N steps at once: these steps are small programs, mostly compilation and single-core
    work, and two single-threaded processes finish sooner than one two-threaded one."""
    cores = workflow.global_resources["_cores"].value  # None under a cluster executor (no --cores)
    if cores is None:
        return resources["cpus_per_task"]
    return cores if SCALE == "paper" else min(cores, resources["cpus_per_task"])


def _figure_output(declared, fig, path):
    caption = declared.path / "captions" / f"{fig.name}.rst"
    return report(path, caption=str(caption), category=declared.name) if caption.exists() else path


for _module, _declared in DECLARATIONS.items():
    _out = module_dir_out(_module)
    _code = code_fingerprint(_module)
    _settings = settings_json(_module)
    for _step in _declared.steps:
        _outputs = step_outputs(_step, _out)
        _resources = step_resources(_step, SCALE)
        for _fig in _step.figures:
            _outputs[f"fig_{_fig.name}"] = _figure_output(_declared, _fig, _outputs[f"fig_{_fig.name}"])

        rule:
            name: f"{_module}__{_step.name}"
            input:
                data=[prepared_data(d) for d in _step.datasets(RESOLVED[_module])],
            output:
                **_outputs,
            params:
                module=_module,
                step=_step.name,
                outdir=_out,
                settings=_settings,
                code=_code,
            log:
                f"{_out}/logs/{_step.name}.log",
            benchmark:
                benchmark_file(_module, _step.name)
            threads: job_threads(_resources)
            resources:
                **_resources,
            shell:  # (a shell command is formatted when the job runs: loop variables go through params)
                f"{PY} -m shared.cli step {{params.module}} {{params.step}} --outdir {{params.outdir:q}} "
                "--threads {threads} --settings-json {params.settings:q} 2>&1 | tee {log}"

    if _declared.has_claims:
        rule:
            name: f"{_module}__verdicts"
            input:
                claims=str(_declared.path / "claims.yaml"),
                measurements=measurement_files(_module),
            output:
                f"{_out}/verdicts.json",
            params:
                module=_module,
                code=_code,
            log:
                f"{_out}/logs/verdicts.log",
            benchmark:
                benchmark_file(_module, "verdicts")
            threads: 1
            resources:
                **LIGHT_RESOURCES,
            shell:
                f"{PY} -m shared.cli verdicts {{params.module}} --out {{output}} --claims {{input.claims}} "
                "--measurements {input.measurements} 2>&1 | tee {log}"

    rule:
        name: f"{_module}__provenance"
        input:
            runinfo=[step_outputs(s, _out)["runinfo"] for s in _declared.steps],
            benchmarks=[benchmark_file(_module, s.name) for s in _declared.steps],
        output:
            f"{_out}/provenance.json",
        params:
            module=_module,
            settings=_settings,
            code=_code,
        log:
            f"{_out}/logs/provenance.log",
        threads: 1
        resources:
            **LIGHT_RESOURCES,
        shell:
            f"{PY} -m shared.cli provenance {{params.module}} --out {{output}} --settings-json {{params.settings:q}} "
            "--runinfo {input.runinfo} --benchmarks {input.benchmarks} 2>&1 | tee {log}"

    # seconds of pandas: on a cluster they run where Snakemake runs, not as jobs
    workflow.localrules(f"{_module}__provenance", *([f"{_module}__verdicts"] if _declared.has_claims else []))

    rule:
        name: _module
        input:
            module_outputs(_module),
