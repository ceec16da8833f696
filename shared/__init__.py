"""landscape-replications' shared package: models, data, training, curvature,
landscape and sharpness tools, claims/verdicts, provenance and the report.

Every replication module under ``replications/`` imports from here; nothing in
here imports from ``replications/``.
"""
