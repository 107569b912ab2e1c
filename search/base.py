"""The ask/tell contract every search strategy implements, and the strategy registry."""

from __future__ import annotations

import abc
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np

from core.errors import InvalidInput, UnknownName, shown
from search.constraints import (
    Constraints,
    Objectives,
    check_int,
    validate_constraints,
    validate_metrics,
    validate_objectives,
    violation,
)
from search.pareto import feasible_front
from search.space import Arch, SearchSpace

__all__ = ["Strategy", "create_strategy", "list_strategies", "register_strategy"]

# Above this many index tuples a space is not enumerated to find its last unseen architectures.
ENUMERATION_LIMIT = 50_000
# Uniform draws tried per wanted architecture before falling back to enumeration.
REJECTION_TRIES = 64
# Proposals one ask passes over because what is counted of them for free breaks a
# constraint (``Strategy.screen_with``); past it, proposals go on to be measured (the
# constraints may be out of reach of most of the space: the search must still end).
SCREEN_MAX = 256


class Strategy(abc.ABC):
    """Proposes architectures to measure and learns from measured results.

    Call order: construct; optionally :meth:`tell` stored results (resume / warm start, in their
    original order); then loop ``ask(n)`` -> measure -> ``tell(arch, metrics)`` for each proposal,
    until ``ask`` returns ``[]`` (budget spent or space exhausted). Tells may arrive in any order
    and a proposal may be told late. Proposals are deterministic given ``seed`` and the sequence
    of calls. Not thread-safe: one strategy belongs to one job driver.

    Identity is ``space.key``: ``ask`` never returns a key already told, pending or failed, and
    telling a key twice raises :class:`InvalidInput`. Every result told counts towards ``budget``.
    Constraints rank first: a feasible result beats an infeasible one; among infeasible results
    the smaller :func:`~search.constraints.violation` wins.

    ``initial``: architectures proposed first, in their order, before the strategy's own
    proposals (e.g. the supernet's smallest and largest networks, the two ends of every
    accuracy/cost front, which uniform and guided proposals rarely reach). They count towards
    ``budget`` like any proposal; one already told (a replay or a warm start) or named twice
    is skipped, so a resumed search does not measure it again.

    A proposal whose measurement fails is told so (:meth:`tell_failed`): it is never
    proposed again and counts neither as a result nor towards ``budget``.

    Metrics known of any architecture without measuring it (a supernet's MACs and params,
    counted): :meth:`screen_with`. A proposal whose known values break a constraint is
    passed over before it is asked (``n_screened``), never proposed again, and counts
    neither as a result nor towards ``budget``.

    Subclasses implement :meth:`_propose` and may override :meth:`_on_tell`,
    :meth:`_on_fail` and :meth:`_on_hint` (metrics known without a measurement, see
    :meth:`hint`; such a subclass sets :attr:`uses_hints`). A subclass that takes a ``prior``
    option (``{metric: predict(archs) -> values}``, e.g. a calibrated latency predictor) sets
    :attr:`accepts_prior`.
    """

    accepts_prior: ClassVar[bool] = False
    #: Whether :meth:`hint` informs this strategy (its ``_on_hint`` learns from hints).
    uses_hints: ClassVar[bool] = False
    #: The most hints per metric such a subclass keeps (the latest), None: all of them.
    hints_kept: ClassVar[int | None] = None

    def __init__(
        self,
        *,
        space: SearchSpace,
        objectives: Objectives,
        constraints: Constraints | None = None,
        seed: int = 0,
        budget: int,
        initial: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        if not isinstance(space, SearchSpace):
            raise InvalidInput(f"space must be a SearchSpace, got {space!r}", field="space")
        self.space = space
        self.objectives = validate_objectives(objectives)
        self.constraints = validate_constraints(constraints)
        self.seed = check_int(seed, "seed", 0)
        self.budget = check_int(budget, "budget", 1)
        self._rng = np.random.default_rng(seed)
        self._told: dict[str, int] = {}  # key -> index into history
        self._pending: dict[str, Arch] = {}
        self._failed: set[str] = set()  # told as failed: never proposed again
        self._screened: set[str] = set()  # passed over by the screen: never proposed again
        self._screen: Callable[[Arch], Mapping[str, float]] | None = None
        self._screens_left = 0  # this ask's (SCREEN_MAX)
        self._history: list[tuple[Arch, dict[str, float]]] = []
        self._enumerated: list[tuple[str, Arch]] | None = None
        self._initial = self._check_initial(space, initial)

    # ---- public contract -------------------------------------------------------------------

    @property
    def history(self) -> list[tuple[Arch, dict[str, float]]]:
        """``(arch, metrics)`` in tell order (a copy)."""
        return [(dict(a), dict(m)) for a, m in self._history]

    @property
    def n_told(self) -> int:
        return len(self._history)

    @property
    def pending(self) -> list[Arch]:
        """Architectures asked but not told yet, in ask order."""
        return [dict(a) for a in self._pending.values()]

    @property
    def remaining(self) -> int:
        """Budget left for new proposals (told and pending both count)."""
        return max(0, self.budget - self.n_told - len(self._pending))

    @property
    def initial_left(self) -> list[Arch]:
        """The ``initial`` architectures not asked or told yet, in order."""
        return [dict(a) for k, a in self._initial.items() if not self._is_seen(k)]

    def is_initial(self, arch: Mapping[str, Any]) -> bool:
        """Whether ``arch`` is one of the ``initial`` architectures."""
        return self.space.key(arch) in self._initial

    @property
    def n_failed(self) -> int:
        """How many architectures were told as failed (:meth:`tell_failed`)."""
        return len(self._failed)

    def tell_failed(self, arch: Mapping[str, Any]) -> None:
        """``arch`` cannot be measured (its measurement raised: a network too large for the
        device's memory, say): no longer pending, never proposed again (nor first, if it is
        an ``initial`` one), and not a result: not in the history, not counted towards
        ``budget``. Told for a proposal whose measurement failed, or, without an ask, for
        one that failed in an earlier run of the search (a resume). Telling one already
        told as a result raises :class:`InvalidInput`; one failed already, nothing."""
        normal = self.space.normalize(arch)
        key = self.space.key(normal)
        if key in self._told:
            raise InvalidInput(f"architecture {key} was already told as a result", field="arch")
        if key in self._failed:
            return
        was_asked = self._pending.pop(key, None) is not None
        self._failed.add(key)
        self._on_fail(key, normal, was_asked)

    @property
    def n_screened(self) -> int:
        """How many proposals the screen passed over (:meth:`screen_with`)."""
        return len(self._screened)

    def screen_with(self, known: Callable[[Arch], Mapping[str, float]]) -> None:
        """``known(arch)``: metrics of any architecture known without measuring it (MACs,
        params, model size, counted). A proposal whose known values break one of the
        constraints on them is passed over: not asked, never proposed again, neither a
        result nor counted towards ``budget`` (the ``initial`` ones aside: chosen by the
        caller). Up to ``SCREEN_MAX`` an ask; then proposals are asked whatever they break.
        A job of a multi-objective audit (33) measured 13 of its 20 proposals to find them
        infeasible by MACs and params alone."""
        self._screen = known

    def ask(self, n: int) -> list[Arch]:
        """Up to ``n`` new architectures; fewer only when the budget or the space runs out.
        The ``initial`` architectures left come first."""
        n = min(check_int(n, "n", 0), self.remaining)
        proposals = self.initial_left[:n]
        for arch in proposals:  # pending before ``_propose``, which must not propose them
            self._pending[self.space.key(arch)] = arch
        self._screens_left = SCREEN_MAX
        while len(proposals) < n:
            screened = self.n_screened
            own = self._propose(n - len(proposals))
            for arch in own:
                key = self.space.key(arch)
                if self._is_seen(key):  # a subclass bug, never a user error
                    raise RuntimeError(f"{type(self).__name__} proposed a seen architecture {key}")
                self._pending[key] = arch
                if self._screened_out(arch, key, asked=True):
                    continue
                proposals.append(arch)
            if not own or self.n_screened == screened:  # nothing passed over: all there is
                break
        return [dict(a) for a in proposals]

    def tell(self, arch: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """Record ``metrics`` (every objective and constrained metric) measured for ``arch``.

        ``arch`` need not have been asked: that is how a job is replayed or warm-started.
        """
        normal = self.space.normalize(arch)
        key = self.space.key(normal)
        if key in self._told:
            raise InvalidInput(f"architecture {key} was already told", field="arch")
        clean = validate_metrics(metrics, [*self.objectives, *self.constraints])
        was_asked = self._pending.pop(key, None) is not None
        self._failed.discard(key)  # measured after all (by another run): a result now
        self._screened.discard(key)
        self._told[key] = len(self._history)
        self._history.append((normal, clean))
        self._on_tell(key, normal, clean, was_asked)

    def prior_proposals_left(self) -> int:
        """How many of the coming proposals a ``prior`` will screen (0 without one; see
        :attr:`accepts_prior`)."""
        return 0

    def hint(self, arch: Mapping[str, Any], metrics: Mapping[str, float]) -> bool:
        """Metrics of ``arch`` known without measuring it for this search, e.g. its accuracy
        measured by a job on another device (accuracy does not depend on the device).

        A hint is not a result: the architecture stays unmeasured and may still be proposed
        (what the hint lacks, such as latency on this device, is measured then); it counts
        toward neither the budget nor the front. Only metrics this search uses (objectives
        and constraints) are kept, each must be a finite number; a later hint of the same
        architecture replaces the earlier one's values of the metrics it holds. Strategies
        that model metrics (:attr:`uses_hints`) learn from hints (``linas``: its predictor of
        each hinted metric trains on them, and a hinted value stands in for the prediction
        of its own architecture, until that architecture is told); the others ignore them.
        Returns whether the hint was kept (False: no metric of this search, or a strategy
        that does not use hints).
        """
        normal = self.space.normalize(arch)
        used = list(dict.fromkeys([*self.objectives, *self.constraints]))
        if not isinstance(metrics, Mapping):
            raise InvalidInput(f"metrics must be a mapping, got {metrics!r}", field="metrics")
        known = [name for name in used if name in metrics]
        if not known:
            return False
        clean = validate_metrics({name: metrics[name] for name in known}, known)
        if not self.uses_hints:
            return False
        self._on_hint(self.space.key(normal), normal, clean)
        return True

    def is_told(self, arch: Mapping[str, Any]) -> bool:
        return self.space.key(arch) in self._told

    def front(self) -> list[tuple[Arch, dict[str, float]]]:
        """Feasible non-dominated results told so far (empty when nothing is feasible)."""
        history = self.history
        metrics = [m for _, m in history]
        return [history[i] for i in feasible_front(metrics, self.objectives, self.constraints)]

    def violation(self, metrics: Mapping[str, float]) -> float:
        return violation(metrics, self.constraints)

    # ---- subclass hooks -------------------------------------------------------------------

    @abc.abstractmethod
    def _propose(self, n: int) -> list[Arch]:
        """``n`` (fewer only if exhausted) architectures with distinct keys, none seen."""

    def _on_tell(  # noqa: B027 - optional hook; stateless strategies need nothing here
        self, key: str, arch: Arch, metrics: dict[str, float], was_asked: bool
    ) -> None:
        """Called after a result is recorded; ``was_asked`` is False for replays."""

    def _on_fail(  # noqa: B027 - optional hook; strategies without open state need nothing
        self, key: str, arch: Arch, was_asked: bool
    ) -> None:
        """Called after ``arch`` is told as failed; ``was_asked`` is False on a resume."""

    def _on_hint(  # noqa: B027 - optional hook; strategies without models ignore hints
        self, key: str, arch: Arch, metrics: dict[str, float]
    ) -> None:
        """Called with a hint's metrics (only those this search uses, at least one)."""

    @staticmethod
    def _check_initial(space: SearchSpace, initial: Sequence[Mapping[str, Any]]) -> dict[str, Arch]:
        """``initial`` normalised, keyed, first occurrence of each key kept."""
        if isinstance(initial, Mapping | str | bytes) or not isinstance(initial, Sequence):
            raise InvalidInput(
                f"initial must be a list of architectures, got {shown(initial)}", field="initial"
            )
        out: dict[str, Arch] = {}
        for i, arch in enumerate(initial):
            if not isinstance(arch, Mapping):
                raise InvalidInput(
                    f"initial[{i}] must be an architecture (gene -> choice), got {shown(arch)}",
                    field="initial",
                )
            try:
                normal = space.normalize(arch)
                key = space.key(normal)
            except InvalidInput as exc:
                raise InvalidInput(f"initial[{i}]: {exc}", field="initial") from exc
            out.setdefault(key, normal)
        return out

    # ---- helpers for subclasses -----------------------------------------------------------

    def _is_seen(self, key: str) -> bool:
        """Told, pending, failed or screened: not to be proposed."""
        return (
            key in self._told
            or key in self._pending
            or key in self._failed
            or key in self._screened
        )

    def _screened_out(self, arch: Arch, key: str, *, asked: bool = False) -> bool:
        """Whether the screen passes ``arch`` over (:meth:`screen_with`); if so it is seen
        from now on (no longer pending where ``asked``) and ``_on_screen`` is called.
        Subclasses that rank many candidates ask it of their pick before proposing it."""
        if self._screen is None or self._screens_left <= 0:
            return False
        known = self._screen(arch)
        bounds = {name: bound for name, bound in self.constraints.items() if name in known}
        if not bounds or violation(known, bounds) == 0.0:
            return False
        self._screens_left -= 1
        self._screened.add(key)
        if asked:
            self._pending.pop(key, None)
        self._on_screen(key, arch, asked)
        return True

    def _on_screen(self, key: str, arch: Arch, asked: bool) -> None:
        """Called when the screen passes ``arch`` over; ``asked``: after ``_propose``
        proposed it (whatever it keeps of an open proposal is dropped as for a failure)."""
        if asked:
            self._on_fail(key, arch, True)

    def _told_metrics(self, key: str) -> dict[str, float] | None:
        index = self._told.get(key)
        return None if index is None else self._history[index][1]

    def _sample_unseen(self, n: int, taken: set[str]) -> list[Arch]:
        """Up to ``n`` uniform architectures unseen and not in ``taken`` (which is updated).

        Rejection sampling first; when draws keep hitting seen keys, small spaces are
        enumerated so that exhaustion is detected exactly. Spaces larger than
        ``ENUMERATION_LIMIT`` may return fewer after ``REJECTION_TRIES`` failed draws in a row.
        """
        out: list[Arch] = []
        misses = 0
        while len(out) < n and misses < REJECTION_TRIES:
            arch = self.space.sample(self._rng)
            key = self.space.key(arch)
            if self._is_seen(key) or key in taken:
                misses += 1
                continue
            misses = 0
            taken.add(key)
            out.append(arch)
        if len(out) < n and self.space.size <= ENUMERATION_LIMIT:
            out += self._pick_enumerated(n - len(out), taken)
        return out

    def _pick_enumerated(self, n: int, taken: set[str]) -> list[Arch]:
        if self._enumerated is None:
            first: dict[str, Arch] = {}
            for arch in self.space.enumerate():
                first.setdefault(self.space.key(arch), arch)
            self._enumerated = list(first.items())
        unseen = [(k, a) for k, a in self._enumerated if not self._is_seen(k) and k not in taken]
        picks = self._rng.permutation(len(unseen))[:n]
        taken.update(unseen[int(i)][0] for i in picks)
        return [dict(unseen[int(i)][1]) for i in picks]


_REGISTRY: dict[str, type[Strategy]] = {}
S = TypeVar("S", bound=type[Strategy])


def register_strategy(name: str) -> Callable[[S], S]:
    """Class decorator registering a :class:`Strategy` under ``name`` (warns on overwrite)."""

    def decorator(cls: S) -> S:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            warnings.warn(f"overwriting strategy {name!r}", stacklevel=2)
        _REGISTRY[name] = cls
        return cls

    return decorator


def list_strategies() -> list[str]:
    """Registered strategy names, sorted."""
    return sorted(_REGISTRY)


def strategy_class(name: str) -> type[Strategy]:
    """The class registered as ``name`` (to ask what it accepts before building it)."""
    if name not in _REGISTRY:
        raise UnknownName("strategy", name, _REGISTRY, field="strategy")
    return _REGISTRY[name]


def create_strategy(name: str, **kwargs: Any) -> Strategy:
    """Build the strategy registered as ``name`` with the constructor's keyword arguments."""
    return strategy_class(name)(**kwargs)
