"""Sagun et al. (2016, 2017): the Hessian spectrum's bulk and outliers (issue #14)."""
