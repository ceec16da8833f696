"""Critical points found, not assumed: Newton-MR and gradient-norm minimization from many starts,
each point described by its exact Hessian (``shared.critical.finder``)."""
