"""Names of the quantities ``shared.critical.validation`` measures, importable without JAX (a module's
declaration must not import JAX: the kit sets float64 before JAX is first imported)."""

SEARCH_QUANTITIES = tuple(f"search_{q}" for q in (
    "starts", "critical", "critical_fraction", "gradient_flat_fraction", "not_converged_fraction", "diverged",
    "unmatched_critical", "nonglobal_minima_found", "saddles_without_negative_eigenvalue",
    "index_mismatches_full_rank", "index_mismatches_rank_deficient", "sets_recovered_fraction",
    "sets_recovered", "sets_enumerated", "recovered_fraction_by_index", "minimum_found",
)) + tuple(f"baseline_{q}" for q in ("critical_fraction", "gradient_flat_fraction", "unmatched_critical",
                                        "sets_recovered_fraction")) + ("search_recovered_minus_baseline",)
