"""The toolkit check (a kit module): the curvature estimators against an exact Hessian and the
landscape tools against closed forms and an independent NumPy recipe, judged by ``claims.yaml``."""
