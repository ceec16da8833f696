"""Curvature tools: exact Hessians for small models, matrix-free estimators for large ones."""
