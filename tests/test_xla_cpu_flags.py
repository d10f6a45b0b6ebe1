"""add_xla_cpu_flags: our XLA:CPU flags join XLA_FLAGS, and a flag the user set keeps its value."""

from maskrcnn_jax.xla_cpu_flags import XLA_CPU_FLAGS, add_xla_cpu_flags

SCHEDULER = "--xla_cpu_enable_concurrency_optimized_scheduler"


def test_flags_are_added_to_an_empty_environment():
    environ = {}
    add_xla_cpu_flags(environ)
    assert environ["XLA_FLAGS"] == f"{SCHEDULER}=false" and XLA_CPU_FLAGS == (f"{SCHEDULER}=false",)


def test_the_users_flags_are_kept_and_their_value_wins():
    environ = {"XLA_FLAGS": f"--xla_force_host_platform_device_count=8 {SCHEDULER}=true"}
    add_xla_cpu_flags(environ)
    assert environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=8 {SCHEDULER}=true"
    environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    add_xla_cpu_flags(environ)
    add_xla_cpu_flags(environ)  # twice: still once
    assert environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=8 {SCHEDULER}=false"
