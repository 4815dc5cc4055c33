"""What defines one distillation run: :class:`DistillConfig` and the named presets
for logistic regression, :class:`NetworkConfig` for a network.

Plain data, no JAX: the command line reads and checks a configuration, and
:mod:`distill.io` stores it as JSON beside a distilled set, before anything
heavy is imported. Which data to distill is not part of it: the caller passes
the data to :func:`distill.distillation.distill`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from distill import checks

#: Inner solvers (see :func:`distill.model.make_inner_solver`).
INNER_SOLVERS = ("gradient_descent", "lbfgs")

#: Solvers of the implicit-differentiation system: conjugate gradient on the
#: inner Hessian (symmetric positive definite), or JAXopt's default, CG on the
#: normal equations, which squares the condition number.
LINEAR_SOLVERS = ("cg", "normal_cg")

#: Backends of implicit differentiation (see :mod:`distill.implicit`): JAXopt's
#: solvers, or Optax's with ``jax.lax.custom_root`` (core JAX, no JAXopt).
IMPLICIT_DIFF_BACKENDS = ("jaxopt", "jax")

#: Outer optimizers (see :mod:`distill.outer`).
OUTER_OPTIMIZERS = ("lbfgs", "gradient_descent", "adam")


class _Fields:
    """``to_dict`` and ``from_dict`` of the configuration dataclasses."""

    def to_dict(self) -> dict:
        """The fields as plain Python values (what :mod:`distill.io` stores as JSON).

        Returns:
          ``{field name: value}`` for every field, JSON-serializable.
        """
        return {field.name: _plain(getattr(self, field.name))
                for field in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, fields: dict) -> "_Fields":
        """The configuration ``fields`` describes; ``ValueError`` names an unknown field.

        Fields missing from ``fields`` take their defaults, so that a file
        written before a field existed still reads.

        Args:
          fields: ``{field name: value}``, as :meth:`to_dict` gives.

        Returns:
          The configuration, validated like any other.

        Raises:
          ValueError: naming the unknown field(s), or the field whose value is invalid.
        """
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"unknown configuration field(s) {', '.join(unknown)}")
        return cls(**fields)


@dataclasses.dataclass(frozen=True)
class DistillConfig(_Fields):
    """Everything that defines one distillation run, apart from the data.

    The field defaults are the ``"fixed-l2reg"`` preset: the original problem
    (``l2reg`` fixed at 0.1, hard labels) on the fast path that the chapter
    "Fast distillation" builds. ``PRESETS`` names the others.

    Attributes:
      images_per_class: distilled images of each class.
      steps: outer iterations at most.
      seed: PRNG seed of the initial distilled images.
      l2reg: the inner L2 strength (its starting value when learned).
      inner_tol: the inner solver stops when its gradient norm is below this.
      inner_maxiter: ... or after this many iterations (the hypergradient is
        then not that of the true inner solution: ``distill`` warns).
      inner_solver: ``"gradient_descent"`` or ``"lbfgs"``.
      outer_tol: the run stops when the outer solver's error (L-BFGS: the
        gradient norm; gradient descent: the step norm) is below this.
      warm_start: start each inner solve from the previous outer step's
        solution instead of ``ones``.
      linear_solve: the solver of the implicit-differentiation system.
      outer_optimizer: ``"lbfgs"``, ``"gradient_descent"`` or ``"adam"``.
      learning_rate: Adam's step size (the other optimizers search a line).
      learn_l2reg: learn ``log(l2reg)`` along with the images.
      learn_labels: learn soft labels (the softmax of learned logits) along
        with the images.
      implicit_diff: who differentiates the inner solve implicitly:
        ``"jaxopt"`` (JAXopt's solvers) or ``"jax"`` (Optax's solvers and
        ``jax.lax.custom_root``, without JAXopt); see :mod:`distill.implicit`.
    """

    images_per_class: int = 1
    steps: int = 50
    seed: int = 0
    l2reg: float = 0.1
    inner_tol: float = 1e-6
    inner_maxiter: int = 2000
    inner_solver: str = "gradient_descent"
    outer_tol: float = 1e-3
    warm_start: bool = True
    linear_solve: str = "cg"
    outer_optimizer: str = "lbfgs"
    learning_rate: float = 0.01
    learn_l2reg: bool = False
    learn_labels: bool = False
    implicit_diff: str = "jaxopt"

    def __post_init__(self):
        for name in ("images_per_class", "steps", "inner_maxiter"):
            checks.positive_int(getattr(self, name), name)
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        for name in ("l2reg", "inner_tol", "outer_tol", "learning_rate"):
            checks.positive_number(getattr(self, name), name)
        for name in ("warm_start", "learn_l2reg", "learn_labels"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name, choices in (("inner_solver", INNER_SOLVERS),
                              ("linear_solve", LINEAR_SOLVERS),
                              ("outer_optimizer", OUTER_OPTIMIZERS),
                              ("implicit_diff", IMPLICIT_DIFF_BACKENDS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {list(choices)}, "
                                 f"got {getattr(self, name)!r}")


def _plain(value):
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return value


#: Named configurations.
#:
#: - ``"seed"``: the original JAXopt notebook, exactly: inner gradient descent
#:   from ones to tol 1e-3, JAXopt's default linear solver, outer gradient
#:   descent, 50 steps.
#: - ``"fixed-l2reg"``: the same problem (``l2reg`` fixed at 0.1, hard labels)
#:   on the fast path of the chapter "Fast distillation"; the field defaults.
#: - ``"learned-l2reg"``: the book's recommended setting and the command
#:   line's default. It learns ``l2reg`` with the images (the chapter "Beyond
#:   pixels"), solves the inner problem with L-BFGS, and runs the outer L-BFGS
#:   until its gradient norm is below ``outer_tol`` or its line search finds no
#:   lower loss, 300 steps at most. A warm start usually converges in a few
#:   dozen inner iterations; the high ``inner_maxiter`` is for the rare solve
#:   that needs more.
PRESETS = {
    "seed": DistillConfig(inner_tol=1e-3, inner_maxiter=500, warm_start=False,
                          linear_solve="normal_cg", outer_optimizer="gradient_descent"),
    "fixed-l2reg": DistillConfig(),
    "learned-l2reg": DistillConfig(learn_l2reg=True, inner_solver="lbfgs",
                                   inner_maxiter=10_000, steps=300),
}


@dataclasses.dataclass(frozen=True)
class NetworkConfig(_Fields):
    """Everything that defines one distillation for a network, apart from the data.

    The inner problem is logistic regression on the features of a ConvNet
    (:mod:`distill.network_distillation`), differentiated implicitly as in
    Part II; the networks come from a pool trained online on the distilled
    set and re-initialized every ``reset_every`` updates.

    Attributes:
      images_per_class: distilled images of each class.
      steps: outer steps (Adam on the images, on a fresh batch of real images each).
      seed: seeds the initial images (a random real subset), the networks
        and the real batches.
      width: channels of the pool's ConvNets.
      depth: convolution blocks of the pool's ConvNets.
      pool_size: networks in the pool; each outer step uses the next one.
      reset_every: online updates after which a network is re-initialized.
      pool_learning_rate: Adam's step size for the online training of the pool;
        0 keeps every network at its random initialization (they are still
        replaced every ``reset_every`` steps).
      learning_rate: Adam's step size for the images (on the standardized
        pixel scale), ``log(l2reg)`` and the label logits.
      batch_size: real images in each outer step's loss.
      l2reg: the inner L2 strength on the features (its start when learned).
      learn_l2reg: learn ``log(l2reg)`` along with the images.
      learn_labels: learn soft labels along with the images.
      inner_tol: the inner L-BFGS stops when its gradient norm is below this.
      inner_maxiter: ... or after this many iterations (counted and warned about).
      implicit_diff: ``"jaxopt"`` or ``"jax"``, as for :class:`DistillConfig`.
    """

    images_per_class: int = 10
    steps: int = 1000
    seed: int = 0
    width: int = 32
    depth: int = 3
    pool_size: int = 4
    reset_every: int = 100
    pool_learning_rate: float = 1e-3
    learning_rate: float = 0.01
    batch_size: int = 256
    l2reg: float = 1e-3
    learn_l2reg: bool = True
    learn_labels: bool = False
    inner_tol: float = 1e-5
    inner_maxiter: int = 500
    implicit_diff: str = "jaxopt"

    def __post_init__(self):
        for name in ("images_per_class", "steps", "width", "depth", "pool_size", "reset_every",
                     "batch_size", "inner_maxiter"):
            checks.positive_int(getattr(self, name), name)
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        for name in ("learning_rate", "l2reg", "inner_tol"):
            checks.positive_number(getattr(self, name), name)
        if self.pool_learning_rate != 0:  # 0: the pool is never trained
            checks.positive_number(self.pool_learning_rate, "pool_learning_rate")
        for name in ("learn_l2reg", "learn_labels"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.implicit_diff not in IMPLICIT_DIFF_BACKENDS:
            raise ValueError(f"implicit_diff must be one of {list(IMPLICIT_DIFF_BACKENDS)}, "
                             f"got {self.implicit_diff!r}")
