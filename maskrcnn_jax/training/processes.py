"""The processes of a multi-host run: joining them, and waiting for each other.

Waiting uses the coordination service's barrier, not a device collective: a process idle while
another compiles or evaluates must not sit in a collective, since CPU (gloo) collectives give up
after 30 seconds.
"""

import jax
import orbax.checkpoint as ocp

BARRIER_TIMEOUT_SECONDS = 3 * 3600  # long enough for a full COCO evaluation on process 0


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """Joins this process to a multi-process run (`jax.distributed.initialize`), before any other jax use.

    With no arguments, jax detects the cluster itself (Cloud TPU, SLURM, ...); elsewhere give all
    three (the coordinator is process 0's "host:port", reachable by every process). Does nothing
    when no argument is given and no cluster is detected (a single-process run).
    """
    explicit = (coordinator_address, num_processes, process_id)
    if any(value is not None for value in explicit):
        if any(value is None for value in explicit):
            raise ValueError("give all of coordinator_address, num_processes and process_id, or none of them")
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id)
        return
    try:
        jax.distributed.initialize()
    except ValueError:
        pass  # no cluster environment detected: one process


def wait_for_all_processes(name: str, timeout_seconds: int = BARRIER_TIMEOUT_SECONDS) -> None:
    """Returns when every process has called it with this `name` (unique per barrier); no-op for one process."""
    if jax.process_count() > 1:
        ocp.multihost.get_barrier_sync_fn()(key=name, timeout_ms=timeout_seconds * 1000)
