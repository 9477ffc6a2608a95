"""The WHIH procedure: a hierarchical state machine that says, each cycle, what may move and where.

Phases (docs/DESIGN.md section 1)::

    idle -> preflight -> calibrate -> ready -> approach -> untip -> align
         -> hand_in_hand {retro_step -> ante_follow -> verify -> retro_step ... | rewind}
         -> crossed -> withdraw -> complete
    + paused (operator hold, dead-man released, stale imaging), fault (latched), aborted

The machine is declared as data (:func:`_spec`) and run by ``transitions``'
``HierarchicalMachine`` (queued, ``model_override``: the trigger methods are declared on
:class:`_Triggers` so they are typed). It advances only on :meth:`Procedure.tick` (trigger
``update``, whose conditional transitions are tried in priority order: fault, time bounds, hold,
then the phase's own progress) and on operator actions. Callbacks never sleep or wait; an
exception raised in any callback or guard latches ``fault`` (``on_exception``).

Dead-man: the enable is *held* when the operator has called :meth:`Procedure.enable` with True
**and** the sampled :attr:`~whih_control.types.OperatorInput.enable_held` is True; releasing either
one pauses every motion phase. Fault: latched from ``ProcedureInputs.fault_active``, a
``Verdict.fault`` or ``OperatorInput.estop``; :meth:`Procedure.acknowledge` leaves it only when the
cause is gone (a ``Verdict`` whose reason is ``LATCHED`` is the supervisor's own latch, not a
cause; the runtime resets the supervisor after a successful acknowledge), and it goes to
``paused`` (motion had started), ``ready`` (calibrated) or ``idle`` — never into motion.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from transitions.extensions import HierarchicalMachine
from transitions.extensions.diagrams import HierarchicalGraphMachine
from transitions.extensions.nesting import NestedState

from whih_control import support
from whih_control.config import Config
from whih_control.errors import ProcedureError
from whih_control.events import EventLog
from whih_control.types import (
    AxisMotion,
    AxisObjective,
    Estimate,
    Objective,
    OperatorInput,
    Reason,
    Verdict,
)

__all__ = [
    "MOTION_PHASES",
    "TERMINAL_PHASES",
    "Phase",
    "Procedure",
    "ProcedureInputs",
    "diagram",
]

_MOVE_TO = AxisMotion.MOVE_TO
_GAP_FOLLOW = AxisMotion.GAP_FOLLOW
_COUPLE_FOLLOW = AxisMotion.COUPLE_FOLLOW
_AW, _AMC, _RW, _RMC, _AROT, _RROT = 1, 2, 4, 8, 16, 32
_AXIS_BITS = (
    ("ante_wire", _AW),
    ("ante_mc", _AMC),
    ("retro_wire", _RW),
    ("retro_mc", _RMC),
    ("ante_wire_rot", _AROT),
    ("retro_wire_rot", _RROT),
)
"""The axes an objective may name, in the order it names them, each with its bit in a mask."""
_LINEAR = ("ante_wire", "ante_mc", "retro_wire", "retro_mc")


_Slot = tuple[Objective, dict[str, AxisObjective]]


def _put(ax: AxisObjective, motion: AxisMotion, target: float, speed: float) -> None:
    ax.motion = motion
    ax.target = target
    ax.speed = speed


_SEP = "."
"""Separator of nested state names inside the machine (phase names themselves contain '_')."""


class Phase(StrEnum):
    """Procedure phases; nested ones flattened with '_' (``hand_in_hand_retro_step``)."""

    IDLE = "idle"
    PREFLIGHT = "preflight"
    CALIBRATE = "calibrate"
    READY = "ready"
    APPROACH = "approach"
    UNTIP = "untip"
    ALIGN = "align"
    HAND_IN_HAND_RETRO_STEP = "hand_in_hand_retro_step"
    HAND_IN_HAND_ANTE_FOLLOW = "hand_in_hand_ante_follow"
    HAND_IN_HAND_VERIFY = "hand_in_hand_verify"
    HAND_IN_HAND_REWIND = "hand_in_hand_rewind"
    CROSSED = "crossed"
    WITHDRAW = "withdraw"
    COMPLETE = "complete"
    PAUSED = "paused"
    FAULT = "fault"
    ABORTED = "aborted"


_NESTED = "hand_in_hand"
_CHILDREN = ("retro_step", "ante_follow", "verify", "rewind")


def _name(phase: Phase) -> str:
    """The machine's state name of ``phase`` (``hand_in_hand.retro_step``)."""
    prefix = _NESTED + "_"
    if phase.value.startswith(prefix):
        return _NESTED + _SEP + phase.value[len(prefix) :]
    return phase.value


_PHASE_OF: dict[str, Phase] = {_name(p): p for p in Phase}

MOTION_PHASES: frozenset[Phase] = frozenset(
    {
        Phase.APPROACH,
        Phase.UNTIP,
        Phase.ALIGN,
        Phase.HAND_IN_HAND_RETRO_STEP,
        Phase.HAND_IN_HAND_ANTE_FOLLOW,
        Phase.HAND_IN_HAND_VERIFY,
        Phase.HAND_IN_HAND_REWIND,
        Phase.WITHDRAW,
    }
)
"""Phases whose objective may move axes (with enable held, drives ready, no fault)."""
TERMINAL_PHASES: frozenset[Phase] = frozenset({Phase.COMPLETE, Phase.ABORTED})
"""Phases the procedure never leaves."""
_TIMED = MOTION_PHASES | {Phase.PREFLIGHT, Phase.CALIBRATE}
"""Phases bounded by ``phase_timeout_s`` (all but those waiting for the operator)."""
_JOG_PHASES = frozenset({Phase.READY, Phase.PAUSED})
_WAITING = frozenset({Phase.IDLE, Phase.READY, Phase.PAUSED, Phase.CROSSED, Phase.FAULT})
"""Phases that wait for the operator, bounded by ``operator.wait_timeout_s`` (then aborted)."""
_MOTION_ORDER = (
    Phase.APPROACH,
    Phase.UNTIP,
    Phase.ALIGN,
    Phase.HAND_IN_HAND_RETRO_STEP,
    Phase.HAND_IN_HAND_ANTE_FOLLOW,
    Phase.HAND_IN_HAND_VERIFY,
    Phase.HAND_IN_HAND_REWIND,
    Phase.WITHDRAW,
)

_COUPLING_MARGIN = 0.15
"""Share of ``coupling_max`` a retrograde step keeps free for estimate noise."""

_COUPLING_SLIP = 0.3
"""mm the coupling may grow past what a step planned before the procedure backs off."""

_LAG_PHASES = frozenset(
    {Phase.HAND_IN_HAND_RETRO_STEP, Phase.HAND_IN_HAND_ANTE_FOLLOW, Phase.HAND_IN_HAND_VERIFY}
)
"""Where the ante wire tip's frame corrections count toward a lag rewind (not while rewinding)."""

_RESUMABLE = (*_MOTION_ORDER, Phase.CROSSED)
"""Where :meth:`Procedure.resume` may return to: a fault after crossing resumes at crossed."""


@dataclass(slots=True)
class ProcedureInputs:
    """What the runtime hands to :meth:`Procedure.tick` every cycle."""

    estimate: Estimate = field(default_factory=Estimate)
    verdict: Verdict = field(default_factory=Verdict)
    drives_ready: bool = False
    """Every drive OPERATION ENABLED with fresh feedback and heartbeat."""
    fault_active: bool = False
    """A fault cause is present (drive fault, bus fault, supervisor fault...)."""
    fault_text: str = ""
    imaging_fresh: bool = False
    """External tip measurements are recent enough (``safety.imaging_max_age_s``)."""
    operator: OperatorInput = field(default_factory=OperatorInput)


# --------------------------------------------------------------------------------------------
# The machine as data


def _spec() -> tuple[list[Any], list[dict[str, Any]]]:
    """States and transitions; conditions and callbacks are names of :class:`Procedure` methods."""
    states: list[Any] = []
    for p in Phase:
        name = _name(p)
        if name.startswith(_NESTED + _SEP):
            continue
        states.append(name)
        if p is Phase.ALIGN:
            states.append({"name": _NESTED, "children": list(_CHILDREN), "initial": _CHILDREN[0]})
    hih = {c: _NESTED + _SEP + c for c in _CHILDREN}
    tr: list[dict[str, Any]] = []

    def add(trigger: str, source: Phase | str, dest: Phase | str, *conds: str, **kw: Any) -> None:
        src = _name(source) if isinstance(source, Phase) else source
        dst = _name(dest) if isinstance(dest, Phase) else dest
        entry: dict[str, Any] = {"trigger": trigger, "source": src, "dest": dst, **kw}
        if conds:
            entry["conditions"] = list(conds)
        tr.append(entry)

    # operator actions
    add("start", Phase.IDLE, Phase.PREFLIGHT)
    add("confirm", Phase.READY, Phase.APPROACH, "can_move")
    add("confirm", Phase.CROSSED, Phase.WITHDRAW, "can_move")
    for p in _MOTION_ORDER:
        add("pause", p, Phase.PAUSED, before="note_operator_pause")
    for p in _RESUMABLE:
        add("resume", Phase.PAUSED, p, f"resume_to_{p.value}", "can_move", before="note_resume")
    for p in Phase:
        if p not in TERMINAL_PHASES:
            add("abort", p, Phase.ABORTED)
    add("acknowledge", Phase.FAULT, Phase.PAUSED, "cause_gone", "has_resume", before="note_ack")
    add("acknowledge", Phase.FAULT, Phase.READY, "cause_gone", "was_calibrated", before="note_ack")
    add("acknowledge", Phase.FAULT, Phase.IDLE, "cause_gone", before="note_ack")
    add("update", Phase.FAULT, Phase.ABORTED, "wait_timed_out")
    # exceptions in callbacks (on_exception) and latched faults
    for p in Phase:
        if p is not Phase.FAULT:
            add("fail", p, Phase.FAULT, before="note_fault")

    # update: tried in order for the present phase
    for p in Phase:
        if p in TERMINAL_PHASES or p is Phase.FAULT:
            continue
        if p is not Phase.IDLE:
            add("update", p, Phase.FAULT, "fault_seen", before="note_fault")
            add("update", p, Phase.ABORTED, "over_time")
        if p in _TIMED:
            add("update", p, Phase.ABORTED, "phase_timed_out")
        if p in _WAITING:
            add("update", p, Phase.ABORTED, "wait_timed_out")
        if p in MOTION_PHASES:
            add("update", p, Phase.PAUSED, "hold_needed", before="note_auto_pause")
    add("update", Phase.PREFLIGHT, Phase.CALIBRATE, "preflight_ok")
    add("update", Phase.CALIBRATE, Phase.ABORTED, "geometry_bad")
    add("update", Phase.CALIBRATE, Phase.READY, "calibrated")
    add("update", Phase.READY, Phase.APPROACH, "auto_confirmed", "can_move")
    add("update", Phase.APPROACH, Phase.ABORTED, "uncrossable")
    add("update", Phase.APPROACH, Phase.UNTIP, "gap_reached")
    add("update", Phase.UNTIP, Phase.ALIGN, "untipped")
    add("update", Phase.ALIGN, _NESTED, "aligned")
    for sub in ("retro_step", "ante_follow", "verify"):
        add("update", hih[sub], Phase.ABORTED, "deviation", "no_rewind_left")
        add("update", hih[sub], hih["rewind"], "deviation")
    add("update", hih["retro_step"], hih["ante_follow"], "step_done")
    add("update", hih["ante_follow"], hih["verify"], "followed")
    add("update", hih["verify"], Phase.CROSSED, "crossing_reached")
    add("update", hih["verify"], Phase.ABORTED, "coupling_bad", "no_rewind_left")
    add("update", hih["verify"], hih["rewind"], "coupling_bad")
    add("update", hih["verify"], Phase.ABORTED, "steps_exhausted")
    add("update", hih["verify"], hih["retro_step"], "verified", after="count_step")
    add("update", hih["rewind"], hih["retro_step"], "rewound")
    add("update", Phase.CROSSED, Phase.WITHDRAW, "crossing_auto", "can_move")
    add("update", Phase.WITHDRAW, Phase.COMPLETE, "withdrawn")
    for p in _RESUMABLE:
        add("update", Phase.PAUSED, p, "auto_resume", f"resume_to_{p.value}", before="note_resume")
    return states, tr


class _State(NestedState):
    separator = _SEP


class _Machine(HierarchicalMachine):
    """HierarchicalMachine with '.' nesting (phase names contain '_').

    ``is_<state>`` predicates are always bound: with ``model_override`` transitions would skip the
    parent's predicate and then fail to attach the children's. Conveniences the model does not
    declare (``may_<trigger>``, ``trigger``) are left out without a warning per instance.
    """

    state_cls = _State

    def _checked_assignment(self, model: object, name: str, func: Callable[..., Any]) -> None:
        if name.startswith("is_"):
            setattr(model, name, func)
            return
        if getattr(type(model), name, None) is None:
            return  # not declared on the model: model_override leaves it out (quietly)
        super()._checked_assignment(model, name, func)


class _Triggers:
    """The machine's model. transitions replaces these methods with the triggers (model_override);
    the bodies here only give mypy the signatures."""

    _state: str = Phase.IDLE.value
    now: Phase = Phase.IDLE
    """The phase of ``state``, kept as transitions sets it: the procedure reads its phase many
    times a cycle and a transition is rare, so the name is looked up once per change."""

    @property
    def state(self) -> str:
        """The machine's state name (transitions reads and sets it by this name)."""
        return self._state

    @state.setter
    def state(self, name: str) -> None:
        self._state = name
        self.now = _PHASE_OF[name]

    def start(self) -> bool:
        return False

    def confirm(self) -> bool:
        return False

    def pause(self) -> bool:
        return False

    def resume(self) -> bool:
        return False

    def abort(self) -> bool:
        return False

    def acknowledge(self) -> bool:
        return False

    def fail(self) -> bool:
        return False

    def update(self) -> bool:
        return False


class _Guards(_Triggers):
    """Resolves the spec's condition and callback names to bound methods of the procedure."""

    def __init__(self, proc: Procedure) -> None:
        self._proc = proc

    def __getattr__(self, name: str) -> Any:
        # only reached for names not defined here: guards and callbacks of the spec. transitions
        # looks each one up by name every cycle; kept on the instance after the first lookup so the
        # cyclic path builds no name string and no bound method per cycle.
        if name.startswith("resume_to_"):
            phase = Phase(name[len("resume_to_") :])
            found: Any = lambda: self._proc.resume_target is phase  # noqa: E731
        elif name.startswith(("_", "is_")):
            raise AttributeError(name)
        else:
            found = getattr(self._proc, "_g_" + name)
        self.__dict__[name] = found
        return found


def _sources(transitions: Iterable[dict[str, Any]]) -> dict[str, frozenset[str]]:
    out: dict[str, set[str]] = {}
    for t in transitions:
        out.setdefault(t["trigger"], set()).add(t["source"])
    return {k: frozenset(v) for k, v in out.items()}


_STATES, _TRANSITIONS = _spec()
_VALID_FROM = _sources(_TRANSITIONS)
"""trigger -> machine states it is valid from (derived from the spec)."""


def _update_guards(transitions: Iterable[dict[str, Any]]) -> dict[str, tuple[tuple[str, ...], ...]]:
    out: dict[str, list[tuple[str, ...]]] = {}
    for t in transitions:
        if t["trigger"] == "update":
            out.setdefault(t["source"], []).append(tuple(t.get("conditions", ())))
    return {k: tuple(v) for k, v in out.items()}


_UPDATE_GUARDS = _update_guards(_TRANSITIONS)
"""state -> the condition names of each of its ``update`` transitions, in order."""


# --------------------------------------------------------------------------------------------


class Procedure:
    """The WHIH sequence: feed it :class:`ProcedureInputs` every cycle, get an :class:`Objective`.

    ``auto_confirm`` (simulation) confirms the start itself (ready -> approach) and resumes an
    automatic pause once its cause is gone; on hardware the operator calls :meth:`confirm` and
    :meth:`resume`. Crossed -> withdraw needs the operator's :meth:`confirm` only when
    ``procedure.confirm_crossing`` is set. Every phase change,
    operator action and fault is written to ``log``.
    """

    def __init__(self, cfg: Config, *, log: EventLog | None = None, auto_confirm: bool = False) -> None:
        self._cfg = cfg
        self._p = cfg.procedure
        self._log = log
        self._auto = auto_confirm
        self._alarm = {a: d.force_alarm for a, d in cfg.drives.items()}
        self._inputs = ProcedureInputs()
        self._t = math.nan
        self._t0 = math.nan
        self._t_enter = math.nan
        self._elapsed: dict[Phase, float] = {}
        self._api_held = False
        self._held = False
        self._input_held = False
        self._why = ""
        self._reason = ""
        self._fault_text = ""
        self._crash = False
        self._failing = False
        self._resume: Phase | None = None
        self._resuming = False
        self._auto_paused = False
        self._calibrated = False
        self._crossed = False
        self._steps = 0
        self._rewinds = 0
        self._target: dict[str, float] = {
            a: math.nan for a in ("ante_wire", "ante_mc", "retro_wire", "retro_mc")
        }
        self._stall_ref: dict[str, tuple[float, float]] = {}
        self._stalled: dict[str, bool] = {"ante_mc": False, "retro_mc": False}
        ablate = cfg.procedure.ablations
        self._approach = "no-mc-approach" not in ablate
        self._coupling = "no-coupling" not in ablate
        rotary = {a for a, d in cfg.drives.items() if d.kind == "rotary"}
        self._rotate = "no-rotation" not in ablate
        self._rot_ante = self._rotate and "ante_wire_rot" in rotary
        self._rot_retro = self._rotate and "retro_wire_rot" in rotary
        self._rewind_bound = cfg.procedure.rewind_bound()
        self._step = cfg.procedure.step
        """Length of the next retrograde step: halved by each rewind, doubled back by each
        verified step (between step_min and step)."""
        self._wire_ref: tuple[float, float] = (math.nan, math.nan)
        self._wire_stalled = False
        self._cpl_plan = math.inf
        """Largest coupling the present hand-in-hand step plans (mm)."""
        self._spinning = False
        self._spin_t0 = 0.0
        self._turn_sign = 1.0
        self._lag = 0.0
        """Frame corrections of the ante wire tip in hand-in-hand, each older one halved (mm):
        negative while imaging keeps finding the tip behind where its drive put it."""
        self._age_prev = math.inf
        self._aw_prev = math.nan
        self._blocked: str | None = None
        """:meth:`_blocker` of the present tick (None outside :meth:`tick`)."""
        self._still = {p: Objective(phase=p.value) for p in Phase}
        self._made: dict[Phase, dict[int, _Slot]] = {p: {} for p in Phase}
        """Per phase and mask of axes named: the objective handed out and its axes (``_slot``)."""
        self._model = _Guards(self)
        self._machine = _Machine(
            model=self._model,
            states=_STATES,
            transitions=_TRANSITIONS,
            initial=Phase.IDLE.value,
            queued=True,
            model_override=True,
            auto_transitions=False,
            after_state_change=self._changed,
            on_exception=self._on_exception,
            send_event=False,
        )
        for p in _MOTION_ORDER:
            self._machine.get_state(_name(p)).add_callback("enter", self._entered)
        # the update guards, resolved to bound methods once (tick asks them every cycle)
        self._update_checks: dict[Phase, tuple[tuple[Callable[[], bool], ...], ...]] = {
            _PHASE_OF[state]: tuple(tuple(getattr(self._model, c) for c in conds) for conds in alternatives)
            for state, alternatives in _UPDATE_GUARDS.items()
        }

    # ---------------------------------------------------------------- state
    @property
    def phase(self) -> Phase:
        """The present phase."""
        return self._model.now

    @property
    def done(self) -> bool:
        """Terminal: complete (crossed and withdrawn) or aborted. Fault is not terminal."""
        return self.phase in TERMINAL_PHASES

    @property
    def outcome(self) -> str:
        """``complete`` | ``aborted`` | ``fault`` | ``idle`` | ``running``."""
        p = self.phase
        if p in (Phase.COMPLETE, Phase.ABORTED, Phase.FAULT, Phase.IDLE):
            return p.value
        return "running"

    @property
    def crossed(self) -> bool:
        """The antegrade wire reached the distal true lumen (sticky)."""
        return self._crossed

    @property
    def reason(self) -> str:
        """Why the procedure aborted (or the latched fault's text); empty otherwise."""
        if self.phase is Phase.FAULT:
            return self._fault_text
        return self._reason

    @property
    def steps(self) -> int:
        """Hand-in-hand steps completed."""
        return self._steps

    @property
    def rewinds(self) -> int:
        """Rewinds started."""
        return self._rewinds

    @property
    def resume_target(self) -> Phase | None:
        """The motion phase :meth:`resume` returns to (None when nothing to resume)."""
        return self._resume

    def jog_allowed(self) -> bool:
        """Manual jog is allowed only in ready and paused (the control core applies every limit)."""
        return self.phase in _JOG_PHASES

    # ---------------------------------------------------------------- cycle
    def tick(self, t: float, inputs: ProcedureInputs) -> Objective:
        """Advance on the cycle tick (at most one phase change) and return this cycle's objective."""
        if not math.isfinite(t):
            raise ValueError(f"t (={t}) must be finite (seconds)")
        self._t = t
        self._inputs = inputs
        if math.isnan(self._t_enter):
            self._t_enter = t
        model = self._model
        if math.isnan(self._t0) and model.now is not Phase.IDLE:
            self._t0 = t
        held_in = inputs.operator.enable_held
        if held_in != self._input_held:
            self._input_held = held_in
            self._log_event("operator", action="enable_input", held=held_in)
        self._held = self._api_held and held_in
        phase = model.now
        if phase is Phase.APPROACH or phase is Phase.HAND_IN_HAND_RETRO_STEP:
            self._track_stalls()
        if phase is Phase.HAND_IN_HAND_ANTE_FOLLOW or phase is Phase.HAND_IN_HAND_RETRO_STEP:
            self._track_wire()
        self._track_lag()
        # what blocks motion depends only on this tick's inputs and the enable: the guards and
        # the objective ask it up to three times a cycle
        self._blocked = self._find_blocker()
        try:
            checks = self._update_checks.get(phase)
            if checks is not None and self._update_may_fire(checks):
                model.update()
            return self._objective()
        finally:
            self._blocked = None  # between ticks (operator calls) it is asked afresh

    @staticmethod
    def _update_may_fire(checks: tuple[tuple[Callable[[], bool], ...], ...]) -> bool:
        """Whether some ``update`` transition's conditions all hold now.

        The guards are pure (they only explain themselves in ``_why``), so asking them first and
        firing the trigger only when one would pass changes nothing but the cost: most cycles no
        transition fires, and the trigger machinery is most of a tick. A guard that raises is
        left to the trigger, whose ``on_exception`` latches the fault.
        """
        # a guard shared by two transitions in a row (deviation) is asked once
        failed: Callable[[], bool] | None = None
        try:
            for conds in checks:
                for check in conds:
                    if check is failed or not check():
                        failed = check
                        break
                else:
                    return True
        except Exception:
            return True
        return False

    # ---------------------------------------------------------------- operator
    def start(self) -> None:
        """Begin: idle -> preflight."""
        self._operate("start", self._model.start)

    def enable(self, held: bool) -> None:
        """The operator's dead-man: True while held. Releasing it pauses every motion phase."""
        self._api_held = bool(held)
        self._held = self._api_held and self._input_held
        self._log_event(
            "operator", action="enable", held=self._api_held, accepted=True, phase=self.phase.value
        )

    def confirm(self) -> None:
        """Confirm a gate: ready -> approach, crossed -> withdraw (needs enable held)."""
        self._operate("confirm", self._model.confirm)

    def pause(self) -> None:
        """Hold every axis: any motion phase -> paused."""
        self._operate("pause", self._model.pause)

    def resume(self) -> None:
        """paused -> the interrupted motion phase (needs enable held, no fault, fresh imaging)."""
        self._operate("resume", self._model.resume)

    def abort(self, why: str = "", *, reason: str | None = None) -> None:
        """End the procedure from any phase that has not ended (aborted is terminal).

        The procedure's reason is "operator abort: ``why``", or ``reason`` when the abort is not
        the operator's (e.g. a time bound of the application that ended an enable)."""
        old = self._reason
        self._reason = reason if reason is not None else "operator abort" + (f": {why}" if why else "")
        try:
            self._operate("abort", self._model.abort, why=why)
        except ProcedureError:
            self._reason = old
            raise

    def acknowledge(self) -> None:
        """Leave a latched fault once its cause is gone (-> paused, ready or idle; never motion)."""
        self._operate("acknowledge", self._model.acknowledge)

    def _operate(self, action: str, trigger: Callable[[], bool], **extra: Any) -> None:
        before = self.phase
        if self._model.state not in _VALID_FROM[action]:
            self._log_event("operator", action=action, accepted=False, phase=before.value, **extra)
            raise ProcedureError(f"{action}: not allowed in phase {before.value!r}")
        self._why = ""
        ok = trigger()
        after = self.phase
        if not ok or after is before:
            why = self._refusal(action)
            self._log_event(
                "operator", action=action, accepted=False, phase=before.value, refused=why, **extra
            )
            if after is Phase.FAULT and before is not Phase.FAULT:
                raise ProcedureError(f"{action}: failed in phase {before.value!r}; fault latched")
            raise ProcedureError(f"{action}: refused in phase {before.value!r} ({why})")
        self._log_event("operator", action=action, accepted=True, phase=before.value, to=after.value, **extra)

    def _refusal(self, action: str) -> str:
        if action == "acknowledge" and not self._g_cause_gone():
            return f"fault cause still present: {self._cause_text() or 'unknown'}"
        if action in ("confirm", "resume"):
            return self._blocker() or "conditions not met"
        return "conditions not met"

    # ---------------------------------------------------------------- machine callbacks
    def _changed(self) -> None:
        new = self.phase
        if self._resuming and new in self._elapsed:
            self._t_enter = self._t - self._elapsed.pop(new)
        else:
            self._t_enter = self._t
        self._resuming = False
        if new is Phase.FAULT:
            self._failing = False
        elif new is not Phase.PAUSED:
            # only a hold (pause, fault and the paused state after acknowledging) keeps a place
            # to resume; anything else moved on
            self._resume = None
        if new is Phase.ABORTED and not self._reason:
            self._reason = self._why or "aborted"
        if new is Phase.CROSSED:
            self._crossed = True
        if new is not Phase.FAULT:
            self._log_event("phase", to=new.value, why=self._why)
        self._why = ""

    def _entered(self) -> None:
        if not self._resuming:
            self._plan(self.phase)

    def _on_exception(self) -> None:
        # called by transitions inside its ``except`` block: the exception is the one in flight
        err = sys.exception()
        self._fault_text = f"{type(err).__name__} in procedure: {err}"
        self._crash = True
        if self._failing or self._model.state not in _VALID_FROM["fail"]:
            # the failure path itself failed (e.g. the log cannot be written): latch fault
            # without running callbacks again
            self._failing = False
            self._machine.set_state(_name(Phase.FAULT), model=self._model)
            return
        self._failing = True
        self._model.fail()  # queued: runs right after this handler returns

    def _g_note_fault(self) -> None:
        current = self.phase
        if current in _RESUMABLE:
            self._save_resume(current)
        cause = self._cause_text()
        if cause and not self._crash:
            self._fault_text = cause
        source = "procedure" if self._crash else "inputs"
        self._crash = False
        self._log_event("fault", source=source, text=self._fault_text or "fault", phase=current.value)
        self._log_event("phase", to=Phase.FAULT.value, why=self._fault_text)

    def _g_note_operator_pause(self) -> None:
        self._save_resume(self.phase)
        self._auto_paused = False
        self._why = "operator pause"

    def _g_note_auto_pause(self) -> None:
        self._save_resume(self.phase)
        self._auto_paused = True

    def _g_note_resume(self) -> None:
        self._resuming = True
        self._why = "resume"

    def _g_note_ack(self) -> None:
        self._auto_paused = False
        self._fault_text = ""
        self._why = "fault acknowledged"

    def _g_count_step(self) -> None:
        self._steps += 1
        self._step = min(self._p.step, 2.0 * self._step)

    def _save_resume(self, phase: Phase) -> None:
        self._resume = phase
        self._elapsed[phase] = self._t - self._t_enter if math.isfinite(self._t - self._t_enter) else 0.0

    # ---------------------------------------------------------------- guards
    def _cause_text(self) -> str:
        i = self._inputs
        if i.operator.estop:
            return "emergency stop"
        if i.fault_active:
            return i.fault_text or "fault"
        if i.verdict.fault:
            return f"{i.verdict.reason.name}: {i.verdict.text}" if i.verdict.text else i.verdict.reason.name
        return ""

    def _g_fault_seen(self) -> bool:
        i = self._inputs
        return i.fault_active or i.verdict.fault or i.operator.estop

    def _g_cause_gone(self) -> bool:
        i = self._inputs
        latched_only = i.verdict.reason is Reason.LATCHED
        return not (i.fault_active or i.operator.estop or (i.verdict.fault and not latched_only))

    def _g_has_resume(self) -> bool:
        return self._resume is not None

    def _g_was_calibrated(self) -> bool:
        return self._calibrated

    def _g_over_time(self) -> bool:
        if self._t - self._t0 > self._p.max_time_s:
            self._why = (
                f"max_time_s: procedure ran {self._t - self._t0:.1f} s (allowed {self._p.max_time_s:g} s)"
            )
            return True
        return False

    def _g_phase_timed_out(self) -> bool:
        spent = self._t - self._t_enter
        if spent > self._p.phase_timeout_s:
            limit = self._p.phase_timeout_s
            self._why = f"phase_timeout_s: {self.phase.value} took {spent:.1f} s (allowed {limit:g} s)"
            return True
        return False

    def _g_wait_timed_out(self) -> bool:
        spent = self._t - self._t_enter
        limit = self._cfg.operator.wait_timeout_s
        if spent > limit:
            self._why = (
                f"operator.wait_timeout_s: {self.phase.value} waited {spent:.1f} s (allowed {limit:g} s)"
            )
            return True
        return False

    def _blocker(self) -> str:
        """Why motion may not run now ('' when it may)."""
        blocked = self._blocked
        if blocked is not None:
            return blocked
        return self._find_blocker()

    def _find_blocker(self) -> str:
        i = self._inputs
        if not self._held:
            return "enable released"
        if self._g_fault_seen():
            return "fault active"
        if not i.drives_ready:
            return "drives not ready"
        if not i.imaging_fresh:
            return "imaging stale"
        if not i.estimate.valid:
            return "estimate invalid"
        tips = i.estimate.tips
        for a in _LINEAR:  # the keys of self._target; a loop, not a generator, every cycle
            x = tips.get(a, math.nan)
            if not -math.inf < x < math.inf:
                return "estimate invalid"
        return ""

    def _g_can_move(self) -> bool:
        return not self._blocker()

    def _g_hold_needed(self) -> bool:
        why = self._blocker()
        if why:
            self._why = why
            return True
        return False

    def _g_auto_confirmed(self) -> bool:
        return self._auto

    def _g_crossing_auto(self) -> bool:
        return not self._p.confirm_crossing

    def _g_auto_resume(self) -> bool:
        return self._auto and self._auto_paused and self._g_can_move()

    def _g_preflight_ok(self) -> bool:
        i = self._inputs
        return i.drives_ready and i.imaging_fresh and i.estimate.valid and not self._g_fault_seen()

    def _g_geometry_bad(self) -> bool:
        if not self._inputs.estimate.valid:
            return False
        gap = self._inputs.estimate.gap
        if not (math.isfinite(gap) and gap > 0.0):
            self._why = f"calibration: MC gap (={gap:g}) must be > 0 mm (ante MC tip before retro MC tip)"
            return True
        return False

    def _g_calibrated(self) -> bool:
        if self._inputs.estimate.valid and all(math.isfinite(self._tip(a)) for a in self._target):
            self._calibrated = True
            return True
        return False

    def _g_uncrossable(self) -> bool:
        gap = self._inputs.estimate.gap
        stalled = [a for a, s in self._stalled.items() if s]
        # one stalled MC is not the end: the other one keeps closing the gap alone
        if len(stalled) == len(self._stalled) and gap > self._p.gap_max:
            self._why = (
                f"uncrossable: {', '.join(stalled)} stalled with the gap at {gap:.2f} mm "
                f"(allowed <= gap_max {self._p.gap_max:g} mm)"
            )
            return True
        return False

    def _g_gap_reached(self) -> bool:
        p = self._p
        gap = self._inputs.estimate.gap
        if not self._approach:
            self._why = f"ablation no-mc-approach: the MCs stay where they are (gap {gap:.2f} mm)"
            return True
        if p.gap_min <= gap <= p.gap_target + p.approach_tolerance:
            return True
        if all(self._stalled.values()) and p.gap_min <= gap <= p.gap_max:
            self._why = f"both MCs stalled with the gap in the window ({gap:.2f} mm)"
            return True
        return False

    def _g_untipped(self) -> bool:
        return self._tip("retro_wire") >= self._target["retro_wire"] - self._p.position_tolerance

    def _g_aligned(self) -> bool:
        if not self._coupling:
            return self._tip("ante_wire") >= self._target["ante_wire"] - self._p.position_tolerance
        c = self._inputs.estimate.coupling
        return 0.0 <= c <= self._p.coupling_target + self._p.position_tolerance

    def _g_deviation(self) -> bool:
        ratio = self._p.deviation_force_ratio
        force = self._inputs.estimate.force
        for axis in ("ante_wire", "retro_wire"):
            f = abs(force.get(axis, 0.0))
            if f >= ratio * self._alarm[axis]:
                self._why = (
                    f"deviation: {axis} force {f:.2f} N (rewind at >= {ratio * self._alarm[axis]:.2f} N)"
                )
                return True
        lag = self._p.lag_rewind
        if lag > 0.0 and self._lag < -lag and self._model.now is not Phase.HAND_IN_HAND_REWIND:
            self._why = (
                f"lag: the frames put the ante wire tip {-self._lag:.2f} mm behind its drive "
                f"(rewind at {lag:g} mm)"
            )
            return True
        c = self._inputs.estimate.coupling
        # the coupling grows beyond what the step planned (the ante wire falls back: buckled in a
        # false track, or stuck), or close to its limit: back off while it is still in range
        late = min(self._cpl_plan + _COUPLING_SLIP, (1.0 - 0.5 * _COUPLING_MARGIN) * self._p.coupling_max)
        if self._coupling and c > late and self._model.now is not Phase.HAND_IN_HAND_REWIND:
            self._why = f"stall: coupling {c:.2f} mm > {late:.2f} mm, the ante wire does not follow"
            return True
        if self._wire_stalled:
            self._why = (
                f"stall: {self._stall_axis()} made less than {self._p.stall_progress:g} mm in "
                f"{self._p.stall_time_s:g} s (unsupported ante wire "
                f"{self._unsupported()[0]:.1f} mm)"
            )
            return True
        return False

    def _stall_axis(self) -> str:
        """The wire the present hand-in-hand sub-phase advances."""
        return "ante_wire" if self._model.now is Phase.HAND_IN_HAND_ANTE_FOLLOW else "retro_wire"

    def _unsupported(self) -> tuple[float, float]:
        """Estimated unsupported length of (ante, retro) wire (mm)."""
        aw, am, rw, rm = (self._tip(a) for a in ("ante_wire", "ante_mc", "retro_wire", "retro_mc"))
        reach = self._p.coupling_max
        return (
            support.unsupported_ante(aw, am, rw, rm, reach),
            support.unsupported_retro(aw, am, rw, rm, reach),
        )

    def _g_no_rewind_left(self) -> bool:
        if self._rewinds >= self._rewind_bound:
            self._why = f"max_rewinds: {self._why or 'rewind needed'} after {self._rewinds} rewinds"
            return True
        return False

    def _g_coupling_bad(self) -> bool:
        if not self._coupling:
            return False
        c = self._inputs.estimate.coupling
        if not 0.0 <= c <= self._p.coupling_max:
            self._why = f"coupling {c:.2f} mm outside [0...{self._p.coupling_max:g}] mm"
            return True
        return False

    def _g_step_done(self) -> bool:
        tol = self._p.position_tolerance
        return (
            self._tip("retro_wire") >= self._target["retro_wire"] - tol
            and self._tip("retro_mc") >= self._target["retro_mc"] - tol
        )

    def _g_followed(self) -> bool:
        if not self._coupling:
            return self._tip("ante_wire") >= self._target["ante_wire"] - self._p.position_tolerance
        return self._inputs.estimate.coupling <= self._p.coupling_target + self._p.position_tolerance

    def _g_crossing_reached(self) -> bool:
        return self._tip("ante_wire") >= self._p.lesion_length + self._p.distal_margin

    def _g_steps_exhausted(self) -> bool:
        if self._steps >= self._p.max_steps:
            self._why = f"max_steps: {self._steps} hand-in-hand steps without crossing"
            return True
        return False

    def _g_verified(self) -> bool:
        # the gap may exceed gap_max in hand-in-hand while every wire stays supported (the
        # supervisor holds any command that would break the support limit)
        return self._p.gap_min <= self._inputs.estimate.gap

    def _g_rewound(self) -> bool:
        tol = self._p.position_tolerance
        return (
            self._tip("ante_wire") <= self._target["ante_wire"] + tol
            and self._tip("retro_wire") <= self._rewind_retro_target() + tol
        )

    def _rewind_retro_target(self) -> float:
        """Where a rewind takes the retro wire: coupled, the coupling target ahead of the ante
        wire tip as seen now (it follows the ante wire back and never runs ahead of it, and the
        rewind ends with the coupling closed); not coupled, where it is."""
        if not self._coupling:
            return self._target["retro_wire"]
        return self._tip("ante_wire") + self._p.coupling_target

    def _g_withdrawn(self) -> bool:
        tol = self._p.position_tolerance
        return (
            self._tip("retro_wire") >= self._target["retro_wire"] - tol
            and self._tip("retro_mc") >= self._target["retro_mc"] - tol
        )

    # ---------------------------------------------------------------- geometry
    def _tip(self, axis: str) -> float:
        return self._inputs.estimate.tips.get(axis, math.nan)

    def _plan(self, phase: Phase) -> None:
        """Fix the targets of a motion phase on entry (not on resume)."""
        p = self._p
        tgt = self._target
        aw, amc, rw, rmc = (self._tip(a) for a in ("ante_wire", "ante_mc", "retro_wire", "retro_mc"))
        if phase is Phase.APPROACH:
            self._stall_ref.clear()
            self._stalled["ante_mc"] = self._stalled["retro_mc"] = False
        elif phase is Phase.UNTIP:
            tgt["retro_wire"] = amc + p.untip_clearance
        elif phase is Phase.ALIGN:
            # without coupling the wire only comes out to its MC tip (it advances alone)
            tgt["ante_wire"] = rw - p.coupling_target if self._coupling else amc
        elif phase is Phase.HAND_IN_HAND_RETRO_STEP:
            self._stall_ref.clear()  # a stall is judged within one step
            self._stalled["ante_mc"] = self._stalled["retro_mc"] = False
            self._wire_ref = (math.nan, math.nan)
            self._wire_stalled = False
            self._turn_sign = -self._turn_sign
            step = self._step
            if self._coupling:
                # a step never takes the coupling past its limit less a margin for estimate noise
                # (after a rewind the wires may start the step further apart than the target)
                # with a long free segment the ante wire may fall back unseen until the next frame:
                # keep more of the coupling in reserve then
                weak = self._unsupported()[0] > 0.5 * p.unsupported_max
                reserve = 0.4 if weak else _COUPLING_MARGIN
                room = p.coupling_max - reserve * p.coupling_max - (rw - aw)
                tgt["retro_wire"] = rw + max(0.0, min(step, room))
                self._cpl_plan = tgt["retro_wire"] - aw
                # the retro MC withdraws only as needed to keep untip_clearance of wire exposed, so
                # the gap-following ante MC stays behind the ante wire tip
                # (and comes back to it where it can: the retro MC re-approaches its wire)
                # but never closer than gap_target ahead of the ante wire tip, so the gap-following
                # ante MC stays behind that tip
                keep = tgt["retro_wire"] + p.untip_clearance
                tgt["retro_mc"] = keep if self._approach else max(rmc, keep)
            else:
                # the retrograde devices only make way: MC ahead of the next ante step, wire inside it
                tgt["retro_mc"] = max(rmc, aw + step + p.untip_clearance)
                tgt["retro_wire"] = max(rw, tgt["retro_mc"] + p.position_tolerance)
        elif phase is Phase.HAND_IN_HAND_ANTE_FOLLOW:
            self._wire_ref = (math.nan, math.nan)
            self._wire_stalled = False
            self._spinning = False
            tgt["ante_wire"] = aw + self._step
        elif phase is Phase.HAND_IN_HAND_REWIND:
            self._rewinds += 1
            self._wire_stalled = False
            self._lag = 0.0
            self._turn_sign = -self._turn_sign
            # what the operator does: back off, turn the wire on the way (rotary axes), shorten the
            # next step, and bring the ante MC up again for support (re-approach)
            self._step = max(p.step_min, 0.5 * self._step)
            tgt["ante_wire"] = aw - p.rewind_distance
            tgt["retro_wire"] = rw  # coupled, it follows the ante wire (_rewind_retro_target)
            reach = rmc - p.gap_target if self._approach else amc
            tgt["ante_mc"] = min(max(amc, reach), tgt["ante_wire"])
        elif phase is Phase.WITHDRAW:
            tgt["retro_wire"] = rw + p.withdraw_distance
            tgt["retro_mc"] = rmc + p.withdraw_distance

    def _track_wire(self) -> None:
        """The wire this hand-in-hand sub-phase advances makes no progress: a stall (buckled,
        held by the support limit, or blocked)."""
        p = self._p
        tip = self._tip(self._stall_axis())
        t_ref, tip_ref = self._wire_ref
        if math.isnan(t_ref) or abs(tip - tip_ref) >= p.stall_progress:
            self._wire_ref = (self._t, tip)
            self._wire_stalled = False
        elif self._t - t_ref >= p.stall_time_s:
            self._wire_stalled = True

    def _track_lag(self) -> None:
        """What an operator sees on the image: a new frame moves the ante wire tip's estimate
        back, again and again, when the tip does not go where its drive puts it (the wire
        buckles into a false track at a force too low to read as a deviation)."""
        est = self._inputs.estimate
        age = est.imaging_age
        aw = est.tips.get("ante_wire", math.nan)
        if age < self._age_prev and self._model.now in _LAG_PHASES:
            jump = aw - self._aw_prev  # a frame's correction (the drive moves it < 0.02 mm a cycle)
            if jump == jump:  # noqa: PLR0124 (NaN: no tip before this frame)
                self._lag = 0.5 * self._lag + jump
        self._age_prev = age
        self._aw_prev = aw

    def _track_stalls(self) -> None:
        p = self._p
        force = self._inputs.estimate.force
        for axis in ("ante_mc", "retro_mc"):
            tip = self._tip(axis)
            pushing = abs(force.get(axis, 0.0)) >= p.stall_force_ratio * self._alarm[axis]
            ref = self._stall_ref.get(axis)
            if ref is None or not pushing or not abs(tip - ref[1]) < p.stall_progress:
                self._stall_ref[axis] = (self._t, tip)
                self._stalled[axis] = False
            elif self._t - ref[0] >= p.stall_time_s:
                self._stalled[axis] = True

    def _objective(self) -> Objective:
        """This cycle's objective: one object per phase and set of axes, built on first use and
        updated in place afterwards (the cycle allocates nothing for it; copy one to keep it)."""
        phase = self._model.now
        if phase not in MOTION_PHASES or not self._g_can_move():
            return self._still[phase]
        p = self._p
        tgt = self._target
        wire, mc = p.wire_speed, p.mc_speed
        rw, rmc = self._tip("retro_wire"), self._tip("retro_mc")
        follow = self._approach  # the ante MC follows the gap in every hand-in-hand sub-phase
        if phase is Phase.APPROACH:
            excess = self._inputs.estimate.gap - p.gap_target
            ante = self._approach and not self._stalled["ante_mc"]
            retro = self._approach and not self._stalled["retro_mc"]
            share = excess / 2.0 if ante and retro else excess
            obj, axes = self._slot(phase, (_AMC if ante else 0) | (_RMC if retro else 0))
            if ante:
                _put(axes["ante_mc"], _MOVE_TO, self._tip("ante_mc") + share, mc)
            if retro:
                _put(axes["retro_mc"], _MOVE_TO, rmc - share, mc)
        elif phase is Phase.UNTIP:
            obj, axes = self._slot(phase, _RW)
            _put(axes["retro_wire"], _MOVE_TO, tgt["retro_wire"], wire)
        elif phase is Phase.ALIGN:
            # coupled, the ante wire closes on the retro wire as it is seen now (an operator
            # watches the image): a target frozen at entry from one noisy estimate can stop the
            # wire where the coupling never reads within what _g_aligned asks
            aim = rw - p.coupling_target if self._coupling else tgt["ante_wire"]
            obj, axes = self._slot(phase, _AW)
            _put(axes["ante_wire"], _MOVE_TO, aim, wire)
        elif phase is Phase.HAND_IN_HAND_RETRO_STEP:
            # rotate on retract: the withdrawing retrograde wire slides on dynamic friction
            rot = self._rot_retro and p.rewind_turn > 0.0
            obj, axes = self._slot(phase, _RW | _RMC | (_AMC if follow else 0) | (_RROT if rot else 0))
            _put(axes["retro_wire"], _MOVE_TO, tgt["retro_wire"], wire)
            _put(axes["retro_mc"], _MOVE_TO, tgt["retro_mc"], mc)
            if follow:
                _put(axes["ante_mc"], _GAP_FOLLOW, rmc - p.gap_target, mc)
            if rot:
                _put(
                    axes["retro_wire_rot"],
                    _MOVE_TO,
                    self._turn_sign * p.rewind_turn,
                    p.spin_speed or p.rewind_turn,
                )
        elif phase is Phase.HAND_IN_HAND_ANTE_FOLLOW:
            spin = self._spin_target()
            spinning = spin == spin  # noqa: PLR0124 (NaN: no spin this cycle)
            obj, axes = self._slot(phase, _AW | (_AMC if follow else 0) | (_AROT if spinning else 0))
            if self._coupling:
                _put(axes["ante_wire"], _COUPLE_FOLLOW, rw - p.coupling_target, wire)
            else:
                _put(axes["ante_wire"], _MOVE_TO, tgt["ante_wire"], wire)
            if follow:
                _put(axes["ante_mc"], _GAP_FOLLOW, rmc - p.gap_target, mc)
            if spinning:
                _put(axes["ante_wire_rot"], _MOVE_TO, spin, p.spin_speed)
        elif phase is Phase.HAND_IN_HAND_VERIFY:
            obj, axes = self._slot(phase, _AMC if follow else 0)
            if follow:
                _put(axes["ante_mc"], _GAP_FOLLOW, rmc - p.gap_target, mc)
        elif phase is Phase.HAND_IN_HAND_REWIND:
            # rotate on retract: turned, the tip does not find its way back into the false track
            rot = self._rot_ante and p.rewind_turn > 0.0
            obj, axes = self._slot(phase, _AW | _RW | _AMC | (_AROT if rot else 0))
            # coupled, the retro wire follows the ante wire back at the coupling target (up to
            # recouple_speed, so it keeps up); it never runs ahead of it, through zero coupling
            ante_speed = wire
            if self._coupling and self._inputs.estimate.coupling > p.coupling_target + p.position_tolerance:
                # re-couple first: an open coupling is closed by the retro wire (it follows its
                # own channel) while the ante wire waits (pulling it back now would open the
                # coupling further, past its limit on the next frame)
                ante_speed = 0.0
            retro_speed = max(wire, p.recouple_speed) if self._coupling else wire
            _put(axes["ante_wire"], _MOVE_TO, tgt["ante_wire"], ante_speed)
            _put(axes["retro_wire"], _MOVE_TO, self._rewind_retro_target(), retro_speed)
            _put(axes["ante_mc"], _MOVE_TO, tgt["ante_mc"], mc)
            if rot:
                _put(
                    axes["ante_wire_rot"],
                    _MOVE_TO,
                    self._turn_sign * p.rewind_turn,
                    p.spin_speed or p.rewind_turn,
                )
        elif phase is Phase.WITHDRAW:
            obj, axes = self._slot(phase, _RW | _RMC)
            _put(axes["retro_wire"], _MOVE_TO, tgt["retro_wire"], wire)
            _put(axes["retro_mc"], _MOVE_TO, tgt["retro_mc"], mc)
        else:
            obj, axes = self._slot(phase, 0)
        return obj

    def _slot(self, phase: Phase, mask: int) -> _Slot:
        """The objective of ``phase`` naming the axes in ``mask`` (``_AXIS_BITS``), and its axes
        to update in place; made once, the first time the phase asks for that set of axes."""
        made = self._made[phase]
        slot = made.get(mask)
        if slot is None:
            axes = {a: AxisObjective() for a, bit in _AXIS_BITS if mask & bit}
            obj = Objective(
                phase=phase.value,
                motion_allowed=True,
                axes=MappingProxyType(axes),
                part_mcs=phase is Phase.WITHDRAW,
                coupled=self._coupling,
            )
            slot = made[mask] = (obj, axes)
        return slot

    def _spin_target(self) -> float:
        """The target of the advancing antegrade wire's spin, NaN for none: it spins once the
        segment is hard (its force >= spin_force_ratio x alarm), swinging +/- spin_turn so the
        rotary axis stays well inside its travel."""
        p = self._p
        if not self._rot_ante or p.spin_speed <= 0.0 or p.spin_turn <= 0.0:
            return math.nan
        if not self._spinning:
            f = abs(self._inputs.estimate.force.get("ante_wire", 0.0))
            if f < p.spin_force_ratio * self._alarm["ante_wire"]:
                return math.nan
            self._spinning = True
            self._spin_t0 = self._t
        swing = 2.0 * p.spin_turn / p.spin_speed
        half = int((self._t - self._spin_t0) / swing) % 2
        sign = self._turn_sign if half == 0 else -self._turn_sign
        return sign * p.spin_turn

    # ---------------------------------------------------------------- log
    def _log_event(self, kind: str, **fields: Any) -> None:
        if self._log is not None:
            self._log.write(self._t if math.isfinite(self._t) else 0.0, kind, **fields)


# --------------------------------------------------------------------------------------------


class _GraphMachine(HierarchicalGraphMachine):
    state_cls = _State


def diagram(fmt: str = "mermaid") -> str:
    """The procedure machine as a mermaid ``stateDiagram-v2`` (no system graphviz needed).

    Nested state ids are flattened with '_' so they equal the :class:`Phase` values.
    """
    if fmt != "mermaid":
        raise ValueError(f"fmt (={fmt!r}) must be one of 'mermaid'")
    machine = _GraphMachine(
        states=_STATES,
        transitions=_TRANSITIONS,
        initial=Phase.IDLE.value,
        auto_transitions=False,
        graph_engine="mermaid",
        show_conditions=True,
        title="whih procedure",
    )
    text: str = machine.get_graph().draw(None)
    return text.replace(_NESTED + _SEP, _NESTED + "_")
