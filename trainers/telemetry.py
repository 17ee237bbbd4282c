"""Telemetry of a run: step time, tokens per second, peak memory, and a progress line on a stream.

``Telemetry`` measures; its ``snapshot`` is what checkpoint and final commits record as
metrics. ``ProgressLine`` draws ``step 12/100 ━━━── loss 3.21 · 1.2k tok/s · 0.15 s/step ·
ETA 0:13`` on the stream it is given (the CLI hands it stderr): redrawn in place on a
terminal, a line every few seconds otherwise.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, TextIO


def peak_memory_mb() -> float:
    """Peak memory of this process: CUDA memory allocated on a GPU, resident set size on CPU."""
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return torch.cuda.max_memory_allocated() / 2**20
    except ImportError:
        pass
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def _callback_base():
    from transformers import TrainerCallback

    return TrainerCallback


def make_telemetry():
    """A Telemetry callback (a ``transformers.TrainerCallback``)."""

    class Telemetry(_callback_base()):
        """Measures every optimizer step; ``snapshot()`` gives the metrics to record."""

        def __init__(self, window: int = 20) -> None:
            self.recent: deque[float] = deque(maxlen=window)
            self.step_seconds = 0.0
            self.steps = 0
            self.tokens0 = 0
            self.tokens = 0
            self.step = 0
            self.max_steps = 0
            self.logs: dict[str, Any] = {}
            self.started = time.perf_counter()
            self._t: float | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()
            self.tokens0 = self.tokens = state.num_input_tokens_seen
            self.step = state.global_step
            self.max_steps = state.max_steps

        def on_step_begin(self, args, state, control, **kwargs):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if self._t is not None:
                dt = time.perf_counter() - self._t
                self.recent.append(dt)
                self.step_seconds += dt
                self.steps += 1
            if state.num_input_tokens_seen:
                self.tokens = state.num_input_tokens_seen
            self.step = state.global_step
            self.max_steps = state.max_steps

        def on_log(self, args, state, control, logs=None, **kwargs):
            for k, v in (logs or {}).items():
                if isinstance(v, (int, float)):
                    self.logs[k] = v
            if isinstance((logs or {}).get("num_tokens"), (int, float)):
                self.tokens = int(logs["num_tokens"])  # trl trainers' own count of trained tokens

        @property
        def step_time(self) -> float | None:
            return sum(self.recent) / len(self.recent) if self.recent else None

        @property
        def tokens_per_s(self) -> float | None:
            done = self.tokens - self.tokens0
            return done / self.step_seconds if self.step_seconds > 0 and done > 0 else None

        def eta(self) -> float | None:
            st = self.step_time
            return st * max(0, self.max_steps - self.step) if st is not None and self.max_steps > 0 else None

        def snapshot(self) -> dict[str, Any]:
            """Metrics known now: step, latest logged values, throughput and memory."""
            out: dict[str, Any] = {"step": self.step}
            for k in ("loss", "eval_loss", "learning_rate", "grad_norm", "epoch", "mean_token_accuracy", "eval_mean_token_accuracy",
                      "rewards/accuracies", "rewards/margins", "accuracy", "eval_accuracy", "distill_kl", "distill_ce"):
                if k in self.logs:
                    out[k] = self.logs[k]
            if self.tokens:
                out["tokens_seen"] = int(self.tokens)
            if self.tokens_per_s is not None:
                out["tokens_per_s"] = round(self.tokens_per_s, 2)
            if self.step_time is not None:
                out["step_time_s"] = round(self.step_time, 5)
            out["peak_memory_mb"] = round(peak_memory_mb(), 1)
            return out

    return Telemetry()


def _human_rate(x: float) -> str:
    return f"{x / 1000:.1f}k" if x >= 1000 else f"{x:.0f}"


def _clock(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def make_progress(stream: TextIO, telemetry, *, label: str = "", interval: float | None = None):
    """A callback that draws a progress line for ``telemetry`` on ``stream``."""

    class ProgressLine(_callback_base()):
        def __init__(self) -> None:
            self.tty = bool(getattr(stream, "isatty", lambda: False)())
            self.interval = interval if interval is not None else (0.1 if self.tty else 5.0)
            self.last = 0.0
            self.last_step = -1
            self.drawn = False

        def line(self) -> str:
            t = telemetry
            total = t.max_steps or 0
            parts = [f"{label} " if label else "", f"step {t.step}/{total}" if total > 0 else f"step {t.step}"]
            if total > 0:
                width = 20
                filled = int(width * min(1.0, t.step / total))
                parts.append(" " + "━" * filled + "─" * (width - filled))
            extras = []
            if "loss" in t.logs:
                extras.append(f"loss {t.logs['loss']:.4g}")
            if t.tokens_per_s:
                extras.append(f"{_human_rate(t.tokens_per_s)} tok/s")
            if t.step_time:
                extras.append(f"{t.step_time:.3f} s/step")
            eta = t.eta()
            if eta is not None:
                extras.append(f"ETA {_clock(eta)}")
            return "".join(parts) + ("  " + " · ".join(extras) if extras else "")

        def draw(self, force: bool = False) -> None:
            now = time.monotonic()
            if not force and now - self.last < self.interval:
                return
            if force and not self.tty and self.last_step == telemetry.step:
                return  # this step's line is already there
            self.last = now
            self.last_step = telemetry.step
            if self.tty:
                stream.write("\r\x1b[2K" + self.line())
                self.drawn = True
            else:
                stream.write(self.line() + "\n")
            stream.flush()

        def message(self, text: str) -> None:
            """Print ``text`` on its own line without breaking the progress line."""
            if self.tty and self.drawn:
                stream.write("\r\x1b[2K")
            stream.write(text + "\n")
            stream.flush()
            if self.tty and self.drawn:
                stream.write(self.line())
                stream.flush()

        def on_step_end(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.draw()

        def on_train_end(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            self.draw(force=True)
            if self.tty:
                stream.write("\n")
                stream.flush()
            self.drawn = False

    return ProgressLine()
