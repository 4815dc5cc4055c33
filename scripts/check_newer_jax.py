"""Does JAXopt 0.8.5 still work on a JAX newer than the one the book pins?

Colab runs a current Python and JAX; the chapters install JAXopt 0.8.5 (the
last release of an archived library) on top of it. This script answers the
question for the newest JAX that pip offers a given Python: it makes a fresh
virtual environment with that Python, installs the newest ``jax`` and
``jaxlib`` with ``jaxopt==0.8.5`` and the newest Optax, and runs, in float64,
on a small L2-regularized logistic regression (10 distilled points, 30
features, 200 real points), the hypergradient of the outer loss by:

- JAXopt's ``LBFGS`` and ``GradientDescent`` (implicit differentiation, CG to 1e-12);
- JAXopt's ``custom_root`` around a forward solver without its own derivative;
- core JAX's ``jax.lax.custom_root`` around Optax's L-BFGS (chapter 4's construction),

each under ``jax.jit``, and prints the versions, the relative differences
from the core-JAX hypergradient and a central finite difference. Exit status
1 if any of them fails or differs by more than 1e-6.

Usage: python scripts/check_newer_jax.py [--python python3.12] [--work DIR]
(``--work`` keeps the environment there; by default a temporary folder).
Nothing of this repository is installed in it. Its output is kept in
``benchmarks/results/jaxopt_on_newer_jax.txt``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

CHECK = r'''
import functools, importlib.metadata, platform, sys, warnings
import numpy as np
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # JAXopt's archival notice
    import jax, jax.numpy as jnp, jaxopt, optax
jax.config.update("jax_enable_x64", True)
print("Python", platform.python_version(), "|", ", ".join(
    f"{name} {importlib.metadata.version(name)}" for name in ("jax", "jaxlib", "jaxopt", "optax")))

rng = np.random.default_rng(0)
S = jnp.asarray(rng.normal(size=(10, 30)))
labels = jnp.arange(10)
real = jnp.asarray(rng.normal(size=(200, 30)))
real_labels = jnp.asarray(np.argmax(np.asarray(real) @ rng.normal(size=(30, 10)), axis=1))
W0 = jnp.zeros((30, 10))
l2reg = 0.1
objective = jaxopt.objective.l2_multiclass_logreg
precise_cg = functools.partial(jaxopt.linear_solve.solve_cg, tol=1e-12, maxiter=1000)


def outer_loss(W):
    logits = real @ W
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - logits[jnp.arange(200), real_labels])


def by_solver(solver):
    return lambda S: solver.run(W0, l2reg, (S, labels)).params


forward = jaxopt.LBFGS(fun=objective, tol=1e-10, maxiter=5000, implicit_diff=False)
decorated = jaxopt.implicit_diff.custom_root(jax.grad(objective), solve=precise_cg)(
    lambda init, l2reg, data: forward.run(init, l2reg, data).params)


def core_jax(S):
    def optimality(W):
        return jax.grad(objective)(W, l2reg, (S, labels))

    def solve(_, W):
        value = lambda W: objective(W, l2reg, (S, labels))
        optimizer = optax.lbfgs()
        value_and_grad = optax.value_and_grad_from_state(value)

        def step(carry):
            W, state = carry
            v, g = value_and_grad(W, state=state)
            updates, state = optimizer.update(g, state, W, value=v, grad=g, value_fn=value)
            return optax.apply_updates(W, updates), state

        def going_on(carry):
            _, state = carry
            count = optax.tree.get(state, "count")
            return (count == 0) | ((count < 5000)
                                   & (optax.tree.norm(optax.tree.get(state, "grad")) > 1e-10))

        return jax.lax.while_loop(going_on, step, (W, optimizer.init(W)))[0]

    def tangent_solve(hessian_product, b):
        cg = lambda matvec, b: jax.scipy.sparse.linalg.cg(matvec, b, tol=1e-12, maxiter=1000)[0]
        return jax.lax.custom_linear_solve(hessian_product, b, cg, symmetric=True)

    return jax.lax.custom_root(optimality, W0, solve, tangent_solve)


inner = {
    "JAXopt LBFGS": by_solver(jaxopt.LBFGS(fun=objective, tol=1e-10, maxiter=5000,
                                           implicit_diff_solve=precise_cg)),
    "JAXopt GradientDescent": by_solver(jaxopt.GradientDescent(
        fun=objective, tol=1e-10, maxiter=5000, implicit_diff_solve=precise_cg)),
    "JAXopt custom_root": lambda S: decorated(W0, l2reg, (S, labels)),
    "core JAX custom_root": core_jax,
}
gradients, failed = {}, False
for name, solve in inner.items():
    try:
        gradients[name] = jax.jit(jax.grad(lambda S: outer_loss(solve(S))))(S)
    except Exception as error:  # report every variant, then fail
        print(f"{name}: FAILED: {type(error).__name__}: {error}")
        failed = True
reference = gradients.get("core JAX custom_root")
for name, gradient in gradients.items():
    if reference is not None and name != "core JAX custom_root":
        difference = float(jnp.linalg.norm(gradient - reference) / jnp.linalg.norm(reference))
        print(f"{name}: relative difference from core JAX's hypergradient {difference:.1e}")
        failed |= not difference < 1e-6
if reference is not None:
    direction = jnp.asarray(rng.normal(size=S.shape))
    loss = jax.jit(lambda S: outer_loss(core_jax(S)))
    epsilon = 1e-5
    finite = (loss(S + epsilon * direction) - loss(S - epsilon * direction)) / (2 * epsilon)
    along = jnp.sum(reference * direction)
    print(f"central finite difference vs core JAX's hypergradient: relative difference "
          f"{float(abs(finite - along) / abs(along)):.1e}")
sys.exit(1 if failed else 0)
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default="python3.12", help="the Python to test with")
    parser.add_argument("--work", help="keep the environment in this folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(args.work or temporary)
        environment = work / "env"
        if not (environment / "bin" / "python").exists():
            subprocess.run([args.python, "-m", "venv", str(environment)], check=True)
        python = str(environment / "bin" / "python")
        subprocess.run([python, "-m", "pip", "install", "-q", "--upgrade", "jax", "jaxlib",
                        "jaxopt==0.8.5", "optax"], check=True)
        sys.exit(subprocess.run([python, "-c", CHECK]).returncode)


if __name__ == "__main__":
    main()
