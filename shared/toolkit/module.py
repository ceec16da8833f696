"""The toolkit check's declaration: the curvature estimators against the exact Hessian of a twin
network, and the landscape tools (Keskar's Metric 2.1, Li's filter-normalised plane) against
closed forms and an independent NumPy implementation. Claims: ``claims.yaml``."""

from shared.config import ConfigError
from shared.module import Figure, Module, Settings, Step


def mlp_parameters(widths: list[int] | tuple[int, ...]) -> int:
    """Parameters of the twin MLP: Σ (w_i + 1) w_{i+1}."""
    return sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:], strict=True))


def check(settings: Settings) -> None:
    """Cross-key checks: Lanczos needs 2k steps for k top and k bottom Ritz values, and no
    Krylov method can take more steps (or Hutch++ more matvecs) than the twin has parameters."""
    widths = settings["widths"]
    if widths[0] != 64 or widths[-1] != 10:
        raise ConfigError(f"config key 'toolkit.widths' has value {widths}; allowed: 64 inputs (digits) first and "
                          "10 classes last, e.g. [64, 32, 10]")
    k, steps = settings["ritz_values"], settings["lanczos_steps"]
    if steps < 2 * k:
        raise ConfigError(f"config key 'toolkit.lanczos_steps' has value {steps}; allowed: >= 2 × ritz_values = "
                          f"{2 * k} (k top and k bottom Ritz values from one run)")
    n = mlp_parameters(widths)
    for key in ("lanczos_steps", "slq_steps", "trace_matvecs"):
        if settings[key] > n:
            raise ConfigError(f"config key 'toolkit.{key}' has value {settings[key]}; allowed: at most the twin's "
                              f"{n} parameters (widths {widths})")


MODULE = Module(
    name="toolkit",
    x64=True,  # the exact spectrum and the estimators in float64: errors are the estimators' own
    check=check,
    steps=(
        Step(
            "check",  # one step: one process pays the imports and JAX's start once
            tables=("estimators", "draws", "keskar", "plane"),
            figures=(
                Figure("toolkit", "Curvature estimators against the exact Hessian"),
                Figure("plane", "Filter-normalised plane: the suite against the NumPy recipe"),
            ),
            quantities=(
                "parameters", "exact_spectrum",
                "lanczos_top_rel_error", "lanczos_bound_violation",
                "power_converged", "power_rel_error",
                "slq_quadrature_error", "slq_moment_z",
                "hutchinson_abs_z", "hutchinson_pooled_z", "hutchpp_abs_z", "hutchpp_pooled_z",
                "keskar_no_progress", "keskar_rel_error", "plane_direction_rel_diff", "plane_loss_rel_diff",
            ),
        ),
    ),
)
