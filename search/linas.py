"""Predictor-guided multi-objective search (in the spirit of DyNAS-T's LINAS, rebuilt).

DyNAS-T's LINAS alternates "measure a population, fit ridge/SVR predictors, run a long NSGA-II
on the predictors". This strategy keeps the idea (cheap predictors steer every proposal) but
replaces the inner genetic search by scoring a whole candidate pool at once, which costs a few
milliseconds and lets every single proposal use every result told so far:

1. ``n_initial`` uniform architectures (told results, e.g. a replay, count towards them).
2. Every ask re-fits one :class:`~search.surrogate.PairwiseRidge` per objective and per
   constrained metric on all told results, plus the hints of that metric (``hint``: values
   known from elsewhere, e.g. accuracy measured on another device) for architectures not
   told (hyperparameters are re-selected by leave-one-out error every ``reselect_every``
   results; each selection is appended to :attr:`LinasStrategy.predictor_report`). A
   hinted value stands in for the prediction of its own architecture, and hinted
   architectures join a sampled pool. Many accuracy hints can make accuracy the better
   predicted objective, and so latency the primary one below.
3. Each proposal solves one epsilon-constraint problem on the predictions: the *primary*
   objective (the one whose predictor has the lowest leave-one-out Kendall tau, i.e. the
   hardest to predict, typically accuracy) is optimised, every other objective must lie
   within a quantile level of its predicted distribution over the pool, and the user's
   constraints must hold (feasibility first: smallest predicted violation wins). Quantile
   levels follow a low-discrepancy sequence (golden-ratio / R_d) from a seeded start, so
   successive proposals sweep the whole front evenly without any randomness to tune.
4. Failed measurements (``tell_failed``: a sub-network the device cannot run, such as the
   largest ones out of its memory) train one more :class:`~search.surrogate.PairwiseRidge`,
   a linear one of which architectures fail (results 0, failures 1) on their genes, from
   ``FAILURE_MIN`` failures on. Once its leave-one-out ranking beats chance clearly
   (``FAILURE_Z``), candidates it predicts more likely to fail than not come after every
   other, in the guided proposals (added to the predicted constraint violation) and the
   uniform initial ones (screened as a prior screens them). Failures spread at random seldom
   turn it on. See BENCHMARKS.md ("Jobs where part of the space cannot be measured").

Why epsilon-constraint rather than hypervolume improvement: on NAS-Bench-201 the accuracy
predictor ranks the top 10 % poorly (seed noise dominates there) while latency predictors are
precise. Bounding the precise metric and maximising the noisy one picks architectures the
model is confident are accurate; hypervolume-improvement scores (tried with Thompson sampling
and with posterior means) kept chasing the fast-and-accurate corner, where the accuracy
predictor is most often over-optimistic. See BENCHMARKS.md for the measurements.

The pool is the whole space when it has at most ``pool_size`` index tuples (NAS-Bench-201:
15,625), else ``pool_size`` uniform draws plus every one-gene mutant of the measured front
and every hinted architecture not told.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from threadpoolctl import ThreadpoolController

from core.errors import InvalidInput
from search.base import Strategy, register_strategy
from search.constraints import Constraints, Objectives, check_int, is_feasible
from search.space import Arch, SearchSpace
from search.surrogate import FeatureMap, PairwiseRidge

__all__ = ["LinasStrategy"]

# Epsilon levels are R_d values raised to this power: proposals are denser at strict bounds,
# where fronts change fastest (on NAS-Bench-201 the accuracy of the fastest 1 % jumps from
# 10 % to 87 %). Measured: power 1 leaves that end thin (worst-corner hypervolume below
# random's at 100 evaluations), power 3 starves the middle of the front.
LEVEL_POWER = 2.0

# Uniform candidates drawn per initial proposal when a prior screens them for feasibility.
PRIOR_DRAWS = 32

# Small dense linear algebra runs several times faster on one BLAS thread than on many,
# especially when other processes share the cores; the limit applies only inside ask().
_THREADS = ThreadpoolController()


#: Hints kept per metric (see ``Strategy.hint``), the most recent ones.
MAX_HINTS = 500

#: Failed measurements (``Strategy.tell_failed``: out of a device's memory, say) after which
#: a model of which architectures fail (told results 0, failures 1) may steer proposals ...
FAILURE_MIN = 3
#: ... once its leave-one-out predictions rank failures above results better than chance
#: by this many standard deviations of that ranking under no pattern at all (Kendall's tau
#: over the pairs of one of each, 2 AUC - 1, against its spread for that many results and
#: failures: the Mann-Whitney statistic's; leave-one-out scores spread 1.4-1.6 times more,
#: review 25b: at 2, random failures turned the model on in 10 of 20 runs, at 3 in none).
FAILURE_Z = 3.0
#: Candidates whose predicted chance of failing (the model is a linear one of the 0/1
#: outcome) exceeds this come after the others.
FAILURE_CHANCE = 0.5


def _shows_a_pattern(tau: float, results: int, failures: int) -> bool:
    """Whether a leave-one-out Kendall tau-a of predictions against 0/1 outcomes (``results``
    zeros, ``failures`` ones) beats chance by ``FAILURE_Z`` standard deviations: over the
    pairs of one of each, tau is 2 AUC - 1, whose spread with no pattern is twice the
    Mann-Whitney AUC's, sqrt((n0 + n1 + 1) / (12 n0 n1))."""
    n = results + failures
    mixed = 2.0 * results * failures / (n * (n - 1))  # tau-a's share of mixed pairs
    spread = 2.0 * np.sqrt((n + 1) / (12.0 * results * failures))
    return bool(tau / mixed >= FAILURE_Z * spread)  # False for NaN


def _rd_steps(dims: int) -> np.ndarray:
    """Additive steps of Roberts' R_d low-discrepancy sequence (d=1: the golden ratio)."""
    phi = 2.0
    for _ in range(64):  # fixed point of x = (1 + x) ** (1 / (d + 1))
        phi = (1.0 + phi) ** (1.0 / (dims + 1))
    return np.asarray((1.0 / phi) ** np.arange(1, dims + 1), dtype=float)


@register_strategy("linas")
class LinasStrategy(Strategy):
    """Predictor-guided search: pairwise-ridge predictors and epsilon-constraint proposals.

    Call order and identity rules as :class:`~search.base.Strategy`. Options (keyword-only):

    - ``n_initial``: uniform proposals before the predictors take over; default
      ``min(20, max(4, budget // 5))`` (enough data for a first fit, little budget spent).
      Results told and the base class's ``initial`` architectures count among them.
    - ``pool_size``: largest space that is scored exhaustively, and the number of uniform
      candidates drawn per ask otherwise (default 20,000).
    - ``interactions``: model gene pairs as well as single genes (default True; the
      leave-one-out selection gives them no weight when they do not help).
    - ``reselect_every``: told results between two hyperparameter selections (default 10);
      predictors are re-fitted on all results at every ask regardless.
    - ``level_power``: epsilon levels are R_d values raised to this power (default 2: dense at
      strict bounds, i.e. the fast end of an accuracy/latency front; 1: uniform over the
      front, which measured better in the accurate-and-fast middle and worse at the extremes).
    - ``features``: optional ``features(arch) -> list of floats``, cheap "free" numbers known
      before measuring (e.g. ``log`` MACs and params from ``supernet.complexity``, FBNetV3's
      idea). Every predictor gets them as a dense linear kernel term whose prior share is
      selected by leave-one-out (0 when they do not help). Called once per candidate of the
      enumerated pool (once in total), or per candidate of every sampled pool (large spaces:
      ``pool_size`` calls per ask, so the function must be cheap), and cached for told results.
    - ``prior``: ``{metric: predict(archs) -> values}``, predictions of a constrained metric
      available before measuring anything (e.g. the latency predictor calibrated on the
      device earlier). Used where the strategy has no data of its own yet: each uniform
      initial proposal is drawn uniformly among ``PRIOR_DRAWS`` candidates that the prior
      predicts to satisfy the constraints on its metrics (any candidate when none is
      predicted to), so a tight constraint does not waste the initial budget on infeasible
      architectures. From then on the strategy's own predictors, fitted on measurements,
      decide.

    :attr:`predictor_report` lists, per hyperparameter selection and metric, the number of
    results, the chosen transform and prior, and the leave-one-out RMSE and Kendall tau.
    """

    accepts_prior = True
    uses_hints = True
    hints_kept: ClassVar[int] = MAX_HINTS

    def __init__(
        self,
        *,
        space: SearchSpace,
        objectives: Objectives,
        constraints: Constraints | None = None,
        seed: int = 0,
        budget: int,
        initial: Sequence[Mapping[str, Any]] = (),
        n_initial: int | None = None,
        pool_size: int = 20_000,
        interactions: bool = True,
        reselect_every: int = 10,
        features: Callable[[Arch], Sequence[float]] | None = None,
        level_power: float = LEVEL_POWER,
        prior: Mapping[str, Callable[[Sequence[Arch]], Sequence[float]]] | None = None,
    ) -> None:
        super().__init__(
            space=space,
            objectives=objectives,
            constraints=constraints,
            seed=seed,
            budget=budget,
            initial=initial,
        )
        if n_initial is None:
            n_initial = min(20, max(4, self.budget // 5))
        self.n_initial = check_int(n_initial, "n_initial", 1)
        self.pool_size = check_int(pool_size, "pool_size", 1)
        self.reselect_every = check_int(reselect_every, "reselect_every", 1)
        if not isinstance(interactions, bool):
            raise InvalidInput("interactions must be a bool", field="interactions")
        self.interactions = interactions
        if (
            isinstance(level_power, bool)
            or not isinstance(level_power, int | float)
            or not 0.25 <= level_power <= 4.0
        ):
            raise InvalidInput(
                f"level_power must be a number in [0.25, 4], got {level_power!r}",
                field="level_power",
            )
        self.level_power = float(level_power)
        if features is not None and not callable(features):
            raise InvalidInput(
                "features must be callable (arch -> list of floats)", field="features"
            )
        self._free = _FreeFeatures(space, features) if features is not None else None
        self._prior = self._check_prior(prior or {})
        self.predictor_report: list[dict[str, Any]] = []
        self._cards = [len(space.choices(name)) for name in space.names]
        self._features = FeatureMap(self._cards, interactions=interactions)
        self._metrics = list(dict.fromkeys([*self.objectives, *self.constraints]))
        self._models = {name: PairwiseRidge(self._features) for name in self._metrics}
        self._told_idx: list[tuple[int, ...]] = []
        self._failed_idx: list[tuple[int, ...]] = []
        self._failure_model_fit = PairwiseRidge(self._features, transforms=("linear",))
        self._failure_fitted_at = (-1, -1)  # (n_told, n_failed) at its last fit
        self._failure_selected_at = -reselect_every  # rows at its last selection
        self._failure_counts = (0, 0)  # (results, failures) at its last selection
        # metric -> key -> (indices, value): hinted values, used until the key is told
        self._hints: dict[str, dict[str, tuple[tuple[int, ...], float]]] = {
            name: {} for name in self._metrics
        }
        self._fitted_at = (-1, -1)  # (n_told, hints received) at the last fit
        self._n_hints = 0
        self._selected_at = -reselect_every  # n_told at the last hyperparameter selection
        self._pool: _Pool | None = None
        dims = max(1, len(self.objectives) - 1)
        self._levels = self._rng.random(dims)  # epsilon levels: seeded start of R_d
        self._level_steps = _rd_steps(dims)

    # ---- Strategy hooks --------------------------------------------------------------------

    def _on_tell(self, key: str, arch: Arch, metrics: dict[str, float], was_asked: bool) -> None:
        indices = self.space.to_indices(arch)
        self._told_idx.append(indices)
        if indices in self._failed_idx:  # failed once, measured since (library use)
            self._failed_idx.remove(indices)
        if self._pool is not None:
            self._pool.close([indices])

    def _on_fail(self, key: str, arch: Arch, was_asked: bool) -> None:
        indices = self.space.to_indices(arch)
        self._failed_idx.append(indices)
        if self._pool is not None:
            self._pool.close([indices])

    def _on_screen(self, key: str, arch: Arch, asked: bool) -> None:
        """Not measurable is not what the screen says (the failure model learns nothing):
        its pool row is closed, as for a proposal."""
        if self._pool is not None:
            self._pool.close([self.space.to_indices(arch)])

    def _on_hint(self, key: str, arch: Arch, metrics: dict[str, float]) -> None:
        """Kept per metric, the latest ``hints_kept`` (``MAX_HINTS``: the predictor's solve
        is cubic in its training set: 500 hints take an ask from ~6 to ~50 ms here, 1,000 to
        ~220 ms)."""
        indices = self.space.to_indices(arch)
        for name, value in metrics.items():
            hints = self._hints[name]
            hints.pop(key, None)
            hints[key] = (indices, value)
            if len(hints) > self.hints_kept:
                del hints[next(iter(hints))]
        self._n_hints += 1

    def _propose(self, n: int) -> list[Arch]:
        taken: set[str] = set()
        n_random = n if self.n_told < 2 else min(n, max(0, self.n_initial - self._n_seen()))
        with _THREADS.limit(limits=1, user_api="blas"):
            screened = n_random and (self._prior or self._failure_model() is not None)
            out = self._sample_screened(n_random, taken) if screened else []
            out += self._sample_unseen(n_random - len(out), taken)
            if self._pool is not None:
                self._pool.close([self.space.to_indices(a) for a in out])
            if len(out) < n and self.n_told >= 2:  # else the space has no more (a fit
                # on fewer than 2 results raised with ``features``: search review 32)
                out += self._propose_guided(n - len(out), taken)
        return out

    def _n_seen(self) -> int:
        return self.n_told + len(self._pending)

    def prior_proposals_left(self) -> int:
        """The initial uniform proposals still to come: the prior screens each of them (not
        the ``initial`` architectures, which take their places first)."""
        if not self._prior:
            return 0
        return max(0, self.n_initial - self._n_seen() - len(self.initial_left))

    # ---- prior -----------------------------------------------------------------------------

    def _check_prior(
        self, prior: Mapping[str, Callable[[Sequence[Arch]], Sequence[float]]]
    ) -> dict[str, Callable[[Sequence[Arch]], Sequence[float]]]:
        """The prior's entries that can screen candidates: callables of constrained metrics."""
        for name, predict in prior.items():
            if not callable(predict):
                raise InvalidInput(f"prior[{name!r}] must be callable", field="prior")
        return {name: prior[name] for name in prior if name in self.constraints}

    def _sample_screened(self, n: int, taken: set[str]) -> list[Arch]:
        """Up to ``n`` unseen uniform architectures the prior predicts to be feasible and
        the failure model (once it has learnt something) to be measurable."""
        out: list[Arch] = []
        bounds = {name: self.constraints[name] for name in self._prior}
        for _ in range(n):
            candidates = self._sample_unseen(PRIOR_DRAWS, set(taken))
            if not candidates:
                break
            predicted = {
                name: np.asarray(predict(candidates), dtype=float)
                for name, predict in self._prior.items()
            }
            failing = self._predicted_failure(candidates)
            feasible = [
                arch
                for row, arch in enumerate(candidates)
                if is_feasible({m: float(v[row]) for m, v in predicted.items()}, bounds)
                and failing[row] <= 0.0
            ]
            pick = feasible[0] if feasible else candidates[0]
            taken.add(self.space.key(pick))
            out.append(pick)
        return out

    # ---- predictors ------------------------------------------------------------------------

    def _fit(self) -> None:
        if self._fitted_at == (self.n_told, self._n_hints):
            return
        select = self.n_told - self._selected_at >= self.reselect_every
        told_active = self._features.active(np.array(self._told_idx))
        for name, model in self._models.items():
            indices, values = self._training_set(name)
            active = (
                told_active
                if len(indices) == len(self._told_idx)
                else self._features.active(np.array(indices))
            )
            extra = self._extra(indices, remember=True)
            model.fit(active, values, extra=extra, select=select)
            if select:
                self.predictor_report.append(
                    {"n_told": self.n_told, "metric": name, **model.report}
                )
        if select:
            self._selected_at = self.n_told
        self._fitted_at = (self.n_told, self._n_hints)

    def _open_hints(self, name: str) -> list[tuple[tuple[int, ...], float]]:
        """(indices, value) of the hints of ``name`` for architectures not told (yet)."""
        return [pair for key, pair in self._hints[name].items() if key not in self._told]

    def _training_set(self, name: str) -> tuple[list[tuple[int, ...]], np.ndarray]:
        """Told results, then the hints of ``name`` for architectures not told (yet)."""
        hinted = self._open_hints(name)
        indices = self._told_idx + [idx for idx, _ in hinted]
        values = [metrics[name] for _, metrics in self._history] + [v for _, v in hinted]
        return indices, np.array(values)

    def _primary(self) -> str:
        """The objective whose predictor ranks worst (first declared on ties)."""
        taus = {name: self._models[name].loo_tau for name in self.objectives}
        return min(self.objectives, key=lambda name: np.nan_to_num(taus[name], nan=1.0))

    # ---- guided proposals ------------------------------------------------------------------

    def _propose_guided(self, n: int, taken: set[str]) -> list[Arch]:
        pool = self._get_pool()  # first: free features are standardised over the pool
        self._fit()
        predictions = {
            name: model.predict(pool.active, pool.extra) for name, model in self._models.items()
        }
        self._put_hinted_values(pool, predictions)
        violation = self._predicted_violation(predictions)
        if (model := self._failure_model()) is not None:
            violation = violation + self._failing(model, pool.active)
        primary = self._primary()
        out: list[Arch] = []
        while len(out) < n:
            rows = pool.open_rows()
            if not len(rows):
                break
            excess = self._epsilon_excess(predictions, primary, rows)
            gain = predictions[primary][rows]
            gain = gain if self.objectives[primary] == "max" else -gain
            order = np.lexsort((-gain, excess, violation[rows]))
            pick = self._first_unseen(pool, rows[order], taken)
            if pick is None:
                break
            arch = self.space.from_indices(pool.indices[pick].tolist())
            if not self._screened_out(arch, self.space.key(arch)):  # its row closed already
                out.append(arch)
        if len(out) < n:  # the pool ran dry (canonical duplicates, or a sampled pool)
            out += self._sample_unseen(n - len(out), taken)
        return out

    def _put_hinted_values(self, pool: _Pool, predictions: dict[str, np.ndarray]) -> None:
        """A hinted architecture's value is known: it replaces the prediction of its pool row
        (on the prediction's scale). On NAS-Bench-201 with a 200-evaluation job's accuracies
        from another device, tight hypervolume 0.612 -> 0.663 at 50 evaluations, 0.766 ->
        0.785 at 100 (10 seeds, 7 devices) against using hints as training data alone."""
        for name, model in self._models.items():
            hinted = self._open_hints(name)
            if hinted:
                rows, found = pool.rows_of([indices for indices, _ in hinted])
                values = np.array([hinted[i][1] for i in found], dtype=float)
                predictions[name][rows] = model.scale_all(values)

    def _epsilon_excess(
        self, predictions: dict[str, np.ndarray], primary: str, rows: np.ndarray
    ) -> np.ndarray:
        """How far each open row lies beyond this proposal's quantile bound on each objective.

        The bound of a non-primary objective is its predicted value at quantile ``level`` of
        the whole pool (from the good end), so level 0.3 admits the best 30 % of the pool.
        """
        others = [name for name in self.objectives if name != primary]
        levels = self._levels
        self._levels = (self._levels + self._level_steps) % 1.0
        excess = np.zeros(len(rows))
        levels = levels**self.level_power
        for name, level in zip(others, levels, strict=False):
            values = predictions[name]
            spread = float(np.std(values)) or 1.0
            if self.objectives[name] == "min":
                gap = values[rows] - np.quantile(values, level)
            else:
                gap = np.quantile(values, 1.0 - level) - values[rows]
            excess += np.clip(gap / spread, 0.0, None)
        return excess

    def _predicted_violation(self, predictions: dict[str, np.ndarray]) -> np.ndarray:
        """Sum over bound sides of how far a prediction is out of bounds (predictor scale)."""
        total = np.zeros(len(next(iter(predictions.values()))))
        for name, bound in self.constraints.items():
            model = self._models[name]
            if bound.min is not None:
                total += np.clip(model.scale(bound.min) - predictions[name], 0.0, None)
            if bound.max is not None:
                total += np.clip(predictions[name] - model.scale(bound.max), 0.0, None)
        return total

    def _failure_model(self) -> PairwiseRidge | None:
        """A linear :class:`PairwiseRidge` of which architectures fail (told results 0,
        failures 1) on their genes, fitted on every one so far, its hyperparameters
        re-selected as the metrics' are; None until ``FAILURE_MIN`` failed and while the
        failures show no pattern (``FAILURE_Z``)."""
        failed, told = len(self._failed_idx), len(self._told_idx)
        if failed < FAILURE_MIN or told < 2:
            return None
        model = self._failure_model_fit
        if self._failure_fitted_at != (told, failed):
            values = np.concatenate([np.zeros(told), np.ones(failed)])
            select = told + failed - self._failure_selected_at >= self.reselect_every
            model.fit(self._features.active(np.array(self._told_idx + self._failed_idx)),
                      values, select=select)  # fmt: skip
            if select:
                self._failure_selected_at = told + failed
                share = model.report["n_select"] / (told + failed)  # a subsample past 400
                self._failure_counts = (max(1, round(told * share)), max(1, round(failed * share)))
                self.predictor_report.append(
                    {"n_told": self.n_told, "metric": "failure", **model.report}
                )
            self._failure_fitted_at = (told, failed)
        return model if _shows_a_pattern(model.loo_tau, *self._failure_counts) else None

    def _predicted_failure(self, archs: Sequence[Arch]) -> np.ndarray:
        """:meth:`_failing` of ``archs``, zeros while there is no failure model."""
        model = self._failure_model()
        if model is None:
            return np.zeros(len(archs))
        indices = np.array([self.space.to_indices(arch) for arch in archs])
        return self._failing(model, self._features.active(indices))

    def _failing(self, model: PairwiseRidge, active: np.ndarray) -> np.ndarray:
        """How far each candidate (its active feature ids) is predicted past a
        ``FAILURE_CHANCE`` of failing, 0 where it is not: added to the predicted constraint
        violation, likely failures come after every candidate predicted measurable and
        feasible."""
        return np.clip(model.predict(active) - model.scale(FAILURE_CHANCE), 0.0, None)

    def _first_unseen(self, pool: _Pool, rows: np.ndarray, taken: set[str]) -> int | None:
        """First of ``rows`` whose key is new; rows passed over are seen and get closed."""
        for row in rows:
            pool.open[row] = False
            key = self.space.key(self.space.from_indices(pool.indices[row].tolist()))
            if not (self._is_seen(key) or key in taken):
                taken.add(key)
                return int(row)
        return None

    # ---- candidate pool --------------------------------------------------------------------

    def _get_pool(self) -> _Pool:
        if self._pool is not None:
            return self._pool
        if self.space.size <= self.pool_size:
            grids = np.meshgrid(*[np.arange(c) for c in self._cards], indexing="ij")
            indices = np.column_stack([g.ravel() for g in grids]).astype(np.int64)
            self._pool = pool = self._make_pool(indices)
        else:
            pool = self._sampled_pool()
        pool.close(self._told_idx)
        pool.close([self.space.to_indices(a) for a in self._pending.values()])
        return pool

    def _sampled_pool(self) -> _Pool:
        """Uniform draws plus every one-gene mutant of the feasible measured front, plus the
        hinted architectures not told yet (their hinted values are known, see
        ``_put_hinted_values``)."""
        draws = np.column_stack([self._rng.integers(c, size=self.pool_size) for c in self._cards])
        front = [self.space.to_indices(arch) for arch, _ in self.front()]
        mutants = [
            (*idx[:g], c, *idx[g + 1 :])
            for idx in front
            for g, cards in enumerate(self._cards)
            for c in range(cards)
        ]
        mutants += [indices for name in self._hints for indices, _ in self._open_hints(name)]
        if mutants:
            draws = np.vstack([draws, np.array(mutants, dtype=np.int64)])
        indices = np.unique(draws, axis=0)
        return self._make_pool(indices)

    def _make_pool(self, indices: np.ndarray) -> _Pool:
        pool = _Pool(indices, self._features.active(indices), self._cards)
        pool.extra = self._extra(indices)
        return pool

    def _extra(
        self, indices: Sequence[Sequence[int]] | np.ndarray, *, remember: bool = False
    ) -> np.ndarray | None:
        return None if self._free is None else self._free(indices, remember=remember)


class _Pool:
    """Candidate index tuples, their active feature ids, and which ones are still open.

    Rows are found by a code of their index tuple, sorted once (one vectorised
    ``searchsorted``): its mixed-radix number where that fits 63 bits, else a 64-bit hash
    (spaces of 40+ genes: OFA's), whose hits are checked against the tuples themselves.
    """

    def __init__(self, indices: np.ndarray, active: np.ndarray, cards: list[int]) -> None:
        self.indices = indices
        self.active = active
        self.open = np.ones(len(indices), dtype=bool)
        self.extra: np.ndarray | None = None  # free features of the rows, if any
        self._order: np.ndarray | None = None  # argsort of the codes, made by ``rows_of``
        self._sorted: np.ndarray | None = None  # the codes in that order
        self._exact = float(np.prod(np.array(cards, dtype=float))) < 2.0**62
        if self._exact:
            self._radix = np.cumprod([1, *cards[:0:-1]])[::-1].astype(np.int64)
        else:  # odd multipliers, fixed: the codes wrap around modulo 2**64
            self._radix = (
                np.random.default_rng(0).integers(1, 2**62, size=len(cards), dtype=np.int64) | 1
            )
        with np.errstate(over="ignore"):
            self._codes = indices @ self._radix

    def open_rows(self) -> np.ndarray:
        return np.flatnonzero(self.open)

    def rows_of(self, tuples: list[tuple[int, ...]]) -> tuple[np.ndarray, list[int]]:
        """The rows of those index tuples that are in the pool, and their positions in
        ``tuples``."""
        if not tuples:
            return np.zeros(0, dtype=int), []
        if self._order is None or self._sorted is None:
            self._order = np.argsort(self._codes, kind="stable")
            self._sorted = self._codes[self._order]
        asked = np.array(tuples, dtype=np.int64)
        with np.errstate(over="ignore"):
            codes = asked @ self._radix
        at = np.minimum(np.searchsorted(self._sorted, codes), len(self._sorted) - 1)
        hit = self._sorted[at] == codes
        rows = self._order[at]
        if not self._exact:  # a hash: a hit is the tuple itself only if its indices agree
            hit &= (self.indices[rows] == asked).all(axis=1)
        return rows[hit], np.flatnonzero(hit).tolist()

    def close(self, tuples: list[tuple[int, ...]]) -> None:
        """Mark those index tuples' rows (pool rows are distinct tuples) as taken."""
        self.open[self.rows_of(tuples)[0]] = False


class _FreeFeatures:
    """The caller's ``features(arch)`` per index tuple: cached, checked and standardised.

    Centre and scale come from the first call, the first candidate pool (the strategy builds
    it before fitting), so that told results and candidates share one scale.
    """

    def __init__(self, space: SearchSpace, function: Callable[[Arch], Sequence[float]]) -> None:
        self.space = space
        self.function = function
        self.cache: dict[tuple[int, ...], np.ndarray] = {}
        self.width: int | None = None
        self.center: np.ndarray | None = None
        self.scale: np.ndarray | None = None

    def raw(self, indices: tuple[int, ...], remember: bool) -> np.ndarray:
        vector = self.cache.get(indices)
        if vector is None:
            arch = self.space.from_indices(indices)
            try:
                vector = np.asarray(self.function(arch), dtype=float).ravel()
            except (TypeError, ValueError) as exc:
                raise InvalidInput(
                    f"features({arch}) is not a list of numbers: {exc}", field="features"
                ) from None
            if self.width is None:
                self.width = len(vector)
            if len(vector) != self.width or not np.isfinite(vector).all():
                raise InvalidInput(
                    f"features({arch}) gave {vector.tolist()}, "
                    f"expected {self.width} finite numbers",
                    field="features",
                )
            if remember:
                self.cache[indices] = vector
        return vector

    def __call__(
        self, indices: Sequence[Sequence[int]] | np.ndarray, *, remember: bool = False
    ) -> np.ndarray:
        """Standardised features of index tuples; ``remember`` caches them (told results)."""
        rows = [tuple(int(i) for i in row) for row in indices]
        matrix = np.array([self.raw(row, remember) for row in rows], dtype=float)
        matrix = matrix.reshape(len(rows), -1)
        if self.center is None or self.scale is None:
            spread = matrix.std(axis=0)
            self.center, self.scale = matrix.mean(axis=0), np.where(spread > 0, spread, 1.0)
        return (matrix - self.center) / self.scale
