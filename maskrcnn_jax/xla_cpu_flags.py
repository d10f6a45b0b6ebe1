"""XLA:CPU flags the project's commands and tests run with; set before JAX starts a backend.

`--xla_cpu_enable_concurrency_optimized_scheduler=false`: XLA:CPU's default scheduler orders a
program for parallelism and starts independent work early; in a training step's backward that cut
the shifted input window of every kernel tap of the tap-sum weight gradients (models/conv.py) before
any of their matmuls and held them all. Measured, XLA's temporaries of the loss and gradient at
3x416x416 with the COCO configs' spec: v2 10.57 -> 4.09 GiB, v1 3.11 -> 1.91 GiB
(a loop over the taps instead held 5.71 / 2.27 GiB, and deadlocked v2's step on 8 CPU devices).
A flag, not a per-jit compiler option: XLA:CPU reads it from XLA_FLAGS only (a `compiler_options`
entry is accepted and ignored). Other platforms ignore xla_cpu flags.
"""

import os

XLA_CPU_FLAGS = ("--xla_cpu_enable_concurrency_optimized_scheduler=false",)


def add_xla_cpu_flags(environ=os.environ) -> None:
    """Adds each of XLA_CPU_FLAGS to environ["XLA_FLAGS"] unless that flag is already set there
    (a user's own value wins). No effect once JAX has started its CPU backend."""
    flags = environ.get("XLA_FLAGS", "").split()
    names = {flag.split("=", 1)[0] for flag in flags}
    flags += [flag for flag in XLA_CPU_FLAGS if flag.split("=", 1)[0] not in names]
    environ["XLA_FLAGS"] = " ".join(flags)
