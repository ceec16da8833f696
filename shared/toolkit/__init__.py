"""The toolkit check: the curvature estimators against an exact Hessian (a kit module)."""
