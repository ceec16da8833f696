"""The module kit: a replication module is one declaration plus its paper's mathematics.

A module's ``replications/<module>/module.py`` defines ``MODULE = Module(...)``: its steps
(name, tables, figures with their titles, the quantities its claims may read, the
prepared data sets it needs), whether it runs in float64, and its cross-key config
checks. From that declaration ``shared/workflow.smk`` generates every Snakemake rule
(one per step, with ``benchmark:``, ``log:``, threads and resources, plus the verdict
and provenance rules) and the report finds every figure.

A step is ``steps.<name>(settings) -> StepResult``: it computes and returns its
measurements, tables and figures; ``run_step`` checks them against the declaration and
writes them atomically. So a step is testable without an output folder, and a name is
written once::

    Step("gradient_descent", tables=("gradient_descent",),
         figures=(Figure("gradient_descent", "Gradient descent from random inits"),),
         quantities=("gd_rel_gap_synthetic_small", ...))
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.config import TOOLKIT, ConfigError, available_modules, config_namespaces, module_dir

Settings = dict[str, Any]


@dataclass(frozen=True)
class Figure:
    """A figure a step draws: ``figures/<name>.png``, its title, and the Snakemake
    report caption ``captions/<name>.rst`` (the run's own caption, with the measured
    numbers, goes to ``figures/<step>.json``)."""

    name: str
    title: str


@dataclass(frozen=True)
class Step:
    """One step of a module: the function ``steps.<name>`` and what it produces."""

    name: str
    tables: tuple[str, ...] = ()
    figures: tuple[Figure, ...] = ()
    quantities: tuple[str, ...] = ()
    datasets: Callable[[Settings], Sequence[str]] = field(default=lambda settings: ())
    # cluster needs per scale, over SCALE_RESOURCES: {"paper": {"runtime": 1440, "mem_mb": 96000}}
    resources: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


# What a step's job asks a cluster for, per scale (Snakemake's standard resources: memory in
# MB, `runtime` in minutes, `cpus_per_task`; `gpu` as snakemake-executor-plugin-slurm reads it,
# i.e. --gpus=1). Locally only `mem_mb` and `gpu` can throttle jobs; a step overrides any key per
# scale with ``Step(resources={"paper": {...}})``. Paper runtimes are upper bounds for one
# H100-class GPU (the README's projections), not measurements.
SCALE_RESOURCES: dict[str, dict[str, Any]] = {
    "smoke": {"mem_mb": 4000, "runtime": 20, "cpus_per_task": 1},
    "quick": {"mem_mb": 8000, "runtime": 60, "cpus_per_task": 1},
    "paper": {"mem_mb": 64000, "runtime": 720, "cpus_per_task": 8, "gpu": 1},
}
# the verdicts, provenance and report rules: seconds of pandas, never a GPU
LIGHT_RESOURCES: dict[str, Any] = {"mem_mb": 2000, "runtime": 10, "cpus_per_task": 1}


def step_resources(step: Step, scale: str) -> dict[str, Any]:
    """The cluster resources of ``step``'s job at ``scale``: SCALE_RESOURCES then the step's own."""
    if scale not in SCALE_RESOURCES:
        raise ConfigError(f"config key 'scale' has value {scale!r}; allowed: {', '.join(SCALE_RESOURCES)}")
    return {**SCALE_RESOURCES[scale], **step.resources.get(scale, {})}


@dataclass(frozen=True)
class Module:
    """A replication module: its steps and how its settings are checked."""

    name: str
    steps: tuple[Step, ...]
    x64: bool = False
    check: Callable[[Settings], None] | None = None  # cross-key checks the schema cannot express
    folder: Path | None = None  # default: replications/<name>

    @property
    def path(self) -> Path:
        return self.folder or module_folder(self.name)

    @property
    def has_claims(self) -> bool:
        return (self.path / "claims.yaml").exists()

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise ConfigError(f"unknown step {name!r} of {self.name}; allowed: {', '.join(s.name for s in self.steps)}")

    def quantities(self) -> set[str]:
        return {q for step in self.steps for q in step.quantities}

    def datasets(self, settings: Settings) -> list[str]:
        return sorted({d for step in self.steps for d in step.datasets(settings)})


@dataclass
class FigureOut:
    """A drawn figure (matplotlib) and the caption its run wrote (setup and measured numbers)."""

    figure: Any
    caption: str


@dataclass
class StepResult:
    """What a step returns: named quantities, tables and figures, nothing written yet."""

    measurements: dict[str, Any]
    tables: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, FigureOut] = field(default_factory=dict)


# --- finding declarations ---------------------------------------------------------------------

# One list of modules for config and kit: the papers (folders of replications/) and the toolkit.
paper_modules = available_modules
all_modules = config_namespaces
module_folder = module_dir


def module_package(name: str) -> str:
    return "shared.toolkit" if name == TOOLKIT else f"replications.{name}"


def load(name: str) -> Module:
    """The declaration ``MODULE`` of a module (its ``module.py``)."""
    declared = importlib.import_module(f"{module_package(name)}.module").MODULE
    if declared.name != name:
        raise ValueError(f"{module_package(name)}.module declares {declared.name!r}, expected {name!r}")
    return declared


# --- paths of a step's outputs -----------------------------------------------------------------

def step_outputs(step: Step, outdir: str) -> dict[str, str]:
    """Every file a step writes, by role (the rule's ``output:``)."""
    out = {
        "measurements": f"{outdir}/measurements/{step.name}.json",
        "figures": f"{outdir}/figures/{step.name}.json",
        "runinfo": f"{outdir}/runinfo/{step.name}.json",
    }
    out.update({f"table_{t}": f"{outdir}/tables/{t}.csv" for t in step.tables})
    out.update({f"fig_{f.name}": f"{outdir}/figures/{f.name}.png" for f in step.figures})
    return out


# --- running a step -----------------------------------------------------------------------------

class StepContractError(RuntimeError):
    """A step returned something other than what its module declares."""


def check_result(module: str, step: Step, result: StepResult) -> None:
    """The step returned exactly its declared quantities, tables and figures."""
    def compare(kind: str, declared: Sequence[str], returned: Sequence[str]) -> None:
        missing, extra = sorted(set(declared) - set(returned)), sorted(set(returned) - set(declared))
        if missing or extra:
            raise StepContractError(
                f"{module}.{step.name} returned {kind} that differ from its declaration in module.py: "
                f"missing {missing}, undeclared {extra} (a quantity the run cannot measure is returned as "
                "{'not_testable': reason})"
            )

    compare("quantities", step.quantities, list(result.measurements))
    compare("tables", step.tables, list(result.tables))
    compare("figures", [f.name for f in step.figures], list(result.figures))


def write_result(step: Step, result: StepResult, outdir: Path) -> None:
    """Write a step's tables, figures (PNG + caption registry) and measurements atomically.
    Measurements go last: their file is the step's mark of completion."""
    from shared.io import write_figure, write_json, write_table

    for name, frame in result.tables.items():
        write_table(outdir / "tables" / f"{name}.csv", frame)
    registry = []
    for fig in step.figures:
        drawn = result.figures[fig.name]
        write_figure(outdir / "figures" / f"{fig.name}.png", drawn.figure)
        registry.append({"file": f"figures/{fig.name}.png", "title": fig.title, "caption": drawn.caption})
    write_json(outdir / "figures" / f"{step.name}.json", registry)
    write_json(outdir / "measurements" / f"{step.name}.json", result.measurements)


def step_function(name: str, step: Step) -> Callable[[Settings], StepResult]:
    return getattr(importlib.import_module(f"{module_package(name)}.steps"), step.name)


def run_step(name: str, step_name: str, settings: Settings, outdir: Path) -> StepResult:
    """Run one declared step with its resolved settings and write what it returns."""
    from shared import resume
    from shared.fingerprint import code_fingerprint

    declared = load(name)
    step = declared.step(step_name)
    with resume.workspace(outdir / "work" / step_name, code_fingerprint(name)):
        result = step_function(name, step)(settings)
    check_result(name, step, result)
    write_result(step, result, outdir)
    return result
