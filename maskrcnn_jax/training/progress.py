"""Progress a person can read, on process 0 only: a tqdm bar on a terminal, plain lines on stdout
otherwise, with images/s and the estimated time left."""

import datetime
import sys
import time

import jax
import tqdm


def say(text: str) -> None:
    """One line on stdout from process 0 (messages such as "resuming from step N")."""
    if jax.process_index() == 0:
        print(text, flush=True)


def format_scalars(scalars: dict[str, float]) -> str:
    """'name value' pairs, losses first, 4 significant digits."""
    ordered = sorted(scalars, key=lambda name: (not name.startswith("loss"), name))
    return " ".join(f"{name} {scalars[name]:.4g}" for name in ordered)


class Progress:
    """Steps from `first_step` to `num_steps`. Throughput is measured between consecutive reports,
    from the second on (the first interval includes the compilation)."""

    def __init__(self, *, first_step: int, num_steps: int, global_batch_size: int, use_bar: bool | None = None):
        self.enabled = jax.process_index() == 0
        self.num_steps = num_steps
        self.global_batch_size = global_batch_size
        self.step = first_step
        self.last_report = None  # (step, time) of the previous report
        use_bar = sys.stderr.isatty() if use_bar is None else use_bar
        self.bar = (tqdm.tqdm(total=num_steps, initial=first_step, unit="step", dynamic_ncols=True)
                    if self.enabled and use_bar else None)

    def throughput(self, step: int) -> dict[str, float]:
        """Called when every step up to `step` has finished: {"images_per_second", "eta_seconds"}
        since the previous call ({} on the first call)."""
        now = time.perf_counter()
        if self.bar is not None:
            self.bar.update(step - self.step)
        self.step = step
        previous, self.last_report = self.last_report, (step, now)
        if previous is None or step <= previous[0]:
            return {}
        steps_per_second = (step - previous[0]) / (now - previous[1])
        return {"images_per_second": steps_per_second * self.global_batch_size,
                "eta_seconds": (self.num_steps - step) / steps_per_second}

    def exclude_time_since_report(self, step: int) -> None:
        """Restarts the throughput measurement at `step` (e.g. after an evaluation, which is not training time)."""
        self.last_report = (step, time.perf_counter())

    def show(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        shown = {name: value for name, value in scalars.items() if name != "eta_seconds"}
        eta = scalars.get("eta_seconds")
        eta_text = f" ETA {datetime.timedelta(seconds=round(eta))}" if eta is not None else ""
        if self.bar is not None:
            self.bar.set_postfix_str(format_scalars(shown) + eta_text, refresh=True)
        else:
            say(f"step {step}/{self.num_steps} {format_scalars(shown)}{eta_text}")

    def message(self, text: str) -> None:
        """A line that does not break the bar."""
        if self.bar is not None:
            self.bar.write(text)
        else:
            say(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
