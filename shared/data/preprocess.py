"""Input preprocessing: small steps, each fitted on the training split only.

A step is a frozen dataclass with ``fit(x_train) -> params`` (empty for
stateless steps), ``apply(x, params)`` and ``describe(params)`` for
provenance.  ``load`` fits every step on the full training split, after the
steps before it, and applies the same fitted step to the requested split: test
data never leaks into statistics.  Inputs are ``(N, H, W, C)`` images or
``(N, D)`` vectors of floats; everything runs in ``jax.numpy`` on the device.

``parse`` turns a config list such as
``["flatten", {"resize": {"height": 10, "width": 10}}, {"pca": {"num_components": 30}}]``
into steps.  CIFAR augmentation is the training code's, not a step here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Protocol

import jax
import jax.numpy as jnp
import numpy as np

Params = dict[str, jax.Array]


class Step(Protocol):
    name: ClassVar[str]
    reference: ClassVar[str]  # the paper the step follows

    def fit(self, x: jax.Array) -> Params: ...

    def apply(self, x: jax.Array, params: Params) -> jax.Array: ...

    def describe(self, params: Params) -> dict[str, Any]: ...


def area_matrix(size_in: int, size_out: int) -> np.ndarray:
    """``(size_out, size_in)`` weights of exact area averaging along one axis.

    Output pixel i covers ``[i s, (i+1) s)`` of the input (``s = size_in /
    size_out``) and averages the input pixels with weights equal to their
    overlap with that interval, divided by s; rows sum to 1.  This is OpenCV's
    ``INTER_AREA`` and reduces to block means when s is an integer.
    """
    scale = size_in / size_out
    lower = np.arange(size_out)[:, None] * scale
    pixel = np.arange(size_in)[None, :]
    overlap = np.minimum(lower + scale, pixel + 1) - np.maximum(lower, pixel)
    return np.clip(overlap, 0.0, None) / scale


@dataclass(frozen=True)
class Resize:
    """Resize images ``(N, H, W, C)`` to ``(N, height, width, C)``.

    Choromanska et al. (2015, arXiv:1412.0233) train on MNIST downsampled to
    10x10 without naming the interpolation; ``method="area"`` (the default)
    is exact area averaging (``area_matrix``; each output pixel the mean of
    the 2.8x2.8 input patch it covers).  Any ``jax.image.resize`` method
    (``"linear"``, ``"cubic"``, ``"lanczos3"``, ...) is used with
    ``antialias=True``.
    """

    height: int
    width: int
    method: str = "area"
    name: ClassVar[str] = "resize"
    reference: ClassVar[str] = "Choromanska et al. 2015 (MNIST downsampled to 10x10)"

    def fit(self, x: jax.Array) -> Params:
        del x
        return {}

    def apply(self, x: jax.Array, params: Params) -> jax.Array:
        del params
        if x.ndim != 4:
            raise ValueError(f"resize needs images (N, H, W, C), got shape {x.shape}")
        if self.method == "area":
            rows = jnp.asarray(area_matrix(x.shape[1], self.height), x.dtype)
            cols = jnp.asarray(area_matrix(x.shape[2], self.width), x.dtype)
            return jnp.einsum("ih,nhwc,jw->nijc", rows, x, cols, precision="highest")
        shape = (x.shape[0], self.height, self.width, x.shape[3])
        return jax.image.resize(x, shape, method=self.method, antialias=True)

    def describe(self, params: Params) -> dict[str, Any]:
        interpolation = (
            "exact area averaging (OpenCV INTER_AREA)"
            if self.method == "area"
            else f"jax.image.resize method={self.method!r} antialias=True"
        )
        return {**_fields(self), "interpolation": interpolation}


@dataclass(frozen=True)
class Standardize:
    """Subtract the training mean and divide by the training standard deviation
    per channel: over all axes but the last (images: per colour channel;
    vectors: per feature).  A standard deviation below ``eps`` counts as 1, so
    constant pixels map to 0.  As in Li et al. (2018, arXiv:1712.09913)'s
    CIFAR-10 pipeline (``cifar10/dataloader.py`` of tomgoldstein/loss-landscape
    hard-codes the per-channel mean and std), with the statistics computed
    here from the training split."""

    eps: float = 1e-6
    name: ClassVar[str] = "standardize"
    reference: ClassVar[str] = "Li et al. 2018 (per-channel normalisation)"

    def fit(self, x: jax.Array) -> Params:
        axes = tuple(range(x.ndim - 1))
        std = jnp.std(x, axis=axes)
        return {"mean": jnp.mean(x, axis=axes), "std": jnp.where(std < self.eps, 1.0, std)}

    def apply(self, x: jax.Array, params: Params) -> jax.Array:
        return (x - params["mean"]) / params["std"]

    def describe(self, params: Params) -> dict[str, Any]:
        return {**_fields(self), **_small(params)}


@dataclass(frozen=True)
class PCA:
    """Project flattened inputs on the top ``num_components`` principal axes of the
    training split (centred with the training mean); with ``whiten`` each
    component is divided by its standard deviation.  Sagun et al. (2017,
    arXiv:1706.04454) reduce MNIST to 30 dimensions this way; Dauphin et al.
    (2014, arXiv:1406.2572) use whitened inputs.  Computed by ``eigh`` of the
    ``D x D`` covariance; component signs are fixed so each axis' largest
    entry is positive."""

    num_components: int
    whiten: bool = False
    eps: float = 1e-12
    name: ClassVar[str] = "pca"
    reference: ClassVar[str] = "Sagun et al. 2017 (PCA to 30 dims); Dauphin et al. 2014 (whiten)"

    def fit(self, x: jax.Array) -> Params:
        flat = x.reshape(x.shape[0], -1)
        if not 0 < self.num_components <= flat.shape[1]:
            raise ValueError(f"num_components must be in 1..{flat.shape[1]}")
        mean = jnp.mean(flat, axis=0)
        centred = flat - mean
        covariance = jnp.matmul(centred.T, centred, precision="highest") / flat.shape[0]
        eigenvalues, eigenvectors = jnp.linalg.eigh(covariance)
        order = jnp.argsort(eigenvalues)[::-1][: self.num_components]
        variances, axes = eigenvalues[order], eigenvectors[:, order]
        signs = jnp.sign(axes[jnp.argmax(jnp.abs(axes), axis=0), jnp.arange(axes.shape[1])])
        return {"mean": mean, "components": axes * signs, "variances": variances}

    def apply(self, x: jax.Array, params: Params) -> jax.Array:
        flat = x.reshape(x.shape[0], -1) - params["mean"]
        projected = jnp.matmul(flat, params["components"], precision="highest")
        if self.whiten:
            projected = projected / jnp.sqrt(jnp.maximum(params["variances"], self.eps))
        return projected

    def describe(self, params: Params) -> dict[str, Any]:
        components = np.asarray(params["components"])
        return {
            **_fields(self),
            "variances": np.asarray(params["variances"]).tolist(),
            "components_sha256": hashlib.sha256(components.tobytes()).hexdigest(),
        }


@dataclass(frozen=True)
class Flatten:
    """Reshape ``(N, ...)`` to ``(N, D)`` for fully connected networks."""

    name: ClassVar[str] = "flatten"
    reference: ClassVar[str] = ""

    def fit(self, x: jax.Array) -> Params:
        del x
        return {}

    def apply(self, x: jax.Array, params: Params) -> jax.Array:
        del params
        return x.reshape(x.shape[0], -1)

    def describe(self, params: Params) -> dict[str, Any]:
        return _fields(self)


STEPS: Mapping[str, type] = {cls.name: cls for cls in (Resize, Standardize, PCA, Flatten)}


def parse(spec: Sequence[str | Mapping[str, Any] | Step]) -> tuple[Step, ...]:
    """Steps from a config list: names, ``{name: {argument: value}}``, or steps."""
    steps: list[Step] = []
    for item in spec:
        if isinstance(item, str):
            steps.append(_make(item, {}))
        elif isinstance(item, Mapping):
            if len(item) != 1:
                raise ValueError(f"a preprocessing entry has one key, got {dict(item)}")
            ((step_name, arguments),) = item.items()
            steps.append(_make(step_name, dict(arguments or {})))
        else:
            steps.append(item)
    return tuple(steps)


def fit_apply(
    steps: Sequence[Step], x_train: jax.Array, x: jax.Array | None
) -> tuple[jax.Array, jax.Array | None, list[dict[str, Any]]]:
    """Fit each step on the (already transformed) training inputs and apply it to
    them and to ``x`` (another split, or ``None``).  Returns both and the provenance."""
    described = []
    for step in steps:
        params = step.fit(x_train)
        x_train = step.apply(x_train, params)
        x = None if x is None else step.apply(x, params)
        described.append({"step": step.name, **step.describe(params), "reference": step.reference})
    return x_train, x, described


def _make(step_name: str, arguments: dict[str, Any]) -> Step:
    try:
        cls = STEPS[step_name]
    except KeyError:
        raise ValueError(
            f"unknown preprocessing {step_name!r}; known: {', '.join(STEPS)}"
        ) from None
    step: Step = cls(**arguments)
    return step


def _fields(step: Any) -> dict[str, Any]:
    return asdict(step)


def _small(params: Params) -> dict[str, Any]:
    return {k: np.asarray(v).tolist() for k, v in params.items()}
