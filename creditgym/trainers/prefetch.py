"""One-step off-policy rollouts (``rl.off_policy_steps: 1``): the next iteration's rollouts are
generated while this iteration's policy update runs.

Contract (``creditgym.trainers.loop`` drives it):

* The rollout engine generates with its own copy of the policy (several ranks have one anyway;
  a single process then keeps a second, frozen copy), so the update can change the trained
  weights while a background thread samples with the copy.
* Iteration ``t``: its rollouts are taken (prefetched, or generated now); the credit inputs that
  need a model are computed with the copy still holding the weights that generated them; the
  copy is then refreshed to the current policy ``W_t``, the rollouts of ``t + 1`` start in the
  background with ``W_t``, and the update turns ``W_t`` into ``W_{t+1}``. Staleness is exactly
  one update; the PPO ratio is taken against the sampled log-probs, so the loss already corrects
  for it (and clips it), and each metrics row records ``rollout/policy_lag``.
* No prefetch is started before an evaluation (which must see ``W_{t+1}``) or after the last
  iteration; the next iteration then generates on-policy. Nothing in the background touches a
  collective or the trained module, so several ranks prefetch their own shares independently.
* Sampling is seeded by (seed, iteration, task, member, turn), so a run with prefetching gives
  the same records every time. A resumed run regenerates its first iteration on-policy (the
  batch in flight at a kill is not checkpointed), so it differs from the uninterrupted one
  from there on, unlike the on-policy loop.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Generic, TypeVar

R = TypeVar("R")


class RolloutPrefetch(Generic[R]):
    """Runs ``collect(iteration)`` in one background thread, at most one iteration ahead."""

    def __init__(self, collect: Callable[[int], R]) -> None:
        self._collect = collect
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="creditgym-prefetch")
        self._pending: tuple[int, Future] | None = None

    def start(self, iteration: int) -> None:
        """Begin collecting ``iteration`` in the background (the previous one must be taken)."""
        if self._pending is not None:
            raise RuntimeError(f"iteration {self._pending[0]} is still being prefetched")
        self._pending = (iteration, self._pool.submit(self._collect, iteration))

    def take(self, iteration: int) -> tuple[R, bool]:
        """(``iteration``'s rollouts, whether they were prefetched); collected now when no
        prefetch of it is pending. A background error is raised here."""
        if self._pending is not None:
            it, future = self._pending
            self._pending = None
            if it == iteration:
                return future.result(), True
            future.result()  # a prefetch of another iteration: finish it, then drop it
        return self._collect(iteration), False

    def close(self) -> None:
        """Wait for a pending prefetch and stop the thread (its result is dropped)."""
        if self._pending is not None:
            try:
                self._pending[1].result()
            except Exception:  # noqa: BLE001 - the run is ending; its own error wins
                pass
            self._pending = None
        self._pool.shutdown(wait=True)
