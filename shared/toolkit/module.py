"""The toolkit check's declaration: one step, the estimators against the exact Hessian."""

from shared.module import Figure, Module, Step

MODULE = Module(
    name="toolkit",
    x64=True,  # the exact spectrum and the estimators in float64: errors are the estimators' own
    steps=(
        Step(
            "estimators",
            tables=("estimators",),
            figures=(Figure("toolkit", "Curvature estimators against the exact Hessian"),),
            quantities=("parameters", "exact_spectrum"),
        ),
    ),
)
