"""The simulated plant: wires and microcatheters in a CTO channel, seen from the drives.

Each linear device is a shaft between the drive (insertion ``q``, axis units) and its tip (``p``,
mm in the path coordinate ``s``). The drive end sits at ``u = s0 + dir * q - absorbed``:

* **slack**: within a dead band ``|u - p| <= slack / 2`` the tip does not move and no force is
  transmitted (backlash of the drive rollers, shaft play in the guide);
* **stiffness**: beyond it the shaft pushes/pulls with ``k * (|u - p| - slack/2)``;
* **friction and lesion resistance**: the tip moves only while that force exceeds the resistance
  in the direction of motion, to the quasi-static equilibrium (force = resistance);
* **buckling (stall)**: the shaft transmits at most ``min(buckle_force, force_stop)``; insertion
  beyond that goes into a prolapse loop (``absorbed``) and the tip stalls.

A wire moving through an MC drags the MC tip along by ``sim.mc.drag`` of its motion, never beyond
the MC's dead band: the disturbance the gap regulator has to reject. The antegrade wire follows
the channel the retrograde wire made; per mm it advances inside the lesion it may leave the channel
(hazard growing with the wire coupling and the J-CTO score); outside the channel its resistance
rises with every further mm, and withdrawing ``sim.lesion.deviation_clear`` behind the point of
departure brings it back (a rewind).

The model is quasi-static and allocation-free per step (plain floats, preallocated dicts), and
deterministic for a seed: every random number comes from one ``random.Random(seed)`` in a fixed
order, drawn independently of the J-CTO score, so two lesions that differ only in J-CTO share
their random draws (common random numbers).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from types import MappingProxyType

from whih_control.config import Config
from whih_control.support import force_capacity
from whih_control.types import LINEAR_AXES

__all__ = ["Plant"]

_WALL = 1.0e9
"""Resistance of a hard contact (the other MC's tip): nothing the shaft can transmit."""


class _Shaft:
    """One linear device: drive end, dead band, elastic shaft, buckling, tip."""

    __slots__ = ("absorbed", "direction", "force", "h", "k", "limit", "limit_max", "p", "q", "s0", "u")

    def __init__(self, s0: float, direction: float, slack: float, k: float, limit: float) -> None:
        self.s0 = s0
        self.direction = direction
        self.h = 0.5 * slack
        self.k = k
        self.limit = limit
        """Largest force the shaft transmits now (buckling, support, the drive's force stop), N."""
        self.limit_max = limit
        """Largest force it ever transmits (shaft buckling or the force stop), N."""
        self.p = s0
        self.q = 0.0
        self.u = s0
        self.absorbed = 0.0
        """Insertion lost into a prolapse loop while stalled (mm along s)."""
        self.force = 0.0

    def drag(self, ds: float) -> None:
        """Move the tip by ``ds`` as far as the dead band lets it (no force involved)."""
        u = self.u
        d_old = u - self.p
        h = self.h
        lo = d_old if d_old < -h else -h
        hi = d_old if d_old > h else h
        d = d_old - ds
        if d < lo:
            d = lo
        elif d > hi:
            d = hi
        self.p = u - d

    def move(self, q: float, r_pos: float, r_neg: float) -> float:
        """Drive end to insertion ``q``; the tip yields against ``r_pos`` (+s) / ``r_neg`` (-s).

        Returns the tip displacement in s.
        """
        self.q = q
        u = self.s0 + self.direction * q - self.absorbed
        p = self.p
        d = u - p
        h = self.h
        k = self.k
        if d > h:
            if self.direction > 0.0:
                excess = d - h - self.limit / k
                if excess > 0.0:
                    self.absorbed += excess
                    u -= excess
                    d -= excess
            else:
                # pulling (see below): a prolapse loop (absorbed < 0 for a shaft pushing along -s)
                loop = -self.absorbed
                if loop > 0.0:
                    excess = d - h - self.limit / k
                    if excess > 0.0:
                        take = excess if excess < loop else loop
                        self.absorbed = take - loop
                        u -= take
                        d -= take
            f = (d - h) * k
            if f > r_pos:
                p = u - h - r_pos / k
                f = r_pos
        elif d < -h:
            if self.direction < 0.0:
                excess = -d - h - self.limit / k
                if excess > 0.0:
                    self.absorbed -= excess
                    u += excess
                    d += excess
            else:
                # pulling: a shaft in tension does not buckle; a prolapse loop left by pushing
                # comes out first (the tip stays while it does), then the shaft pulls the tip
                loop = self.absorbed
                if loop > 0.0:
                    excess = -d - h - self.limit / k
                    if excess > 0.0:
                        take = excess if excess < loop else loop
                        self.absorbed = loop - take
                        u += take
                        d += take
            f = (-d - h) * k
            if f > r_neg:
                p = u + h + r_neg / k
                f = r_neg
        else:
            f = 0.0
        self.u = u
        self.force = f
        moved = p - self.p
        self.p = p
        return moved


class Plant:
    """Wire and MC mechanics in a CTO channel; a :class:`firmware_iface.types.PlantLoad`.

    ``Plant(cfg, seed=None)`` builds the lesion of ``cfg.procedure.lesion_length`` and
    ``cfg.sim.jcto`` with the random draws of ``seed`` (default ``cfg.sim.seed``). Axes are those
    of ``cfg.drives``; the four linear axes are required, rotary axes only feel a small friction.
    """

    __slots__ = (
        "_am",
        "_am_reach",
        "_am_stop",
        "_aw",
        "_budget",
        "_calc_hi",
        "_calc_lo",
        "_cfg",
        "_dev_calc",
        "_dev_clear",
        "_dev_force",
        "_dev_k",
        "_dev_rate",
        "_dev_scale2",
        "_dev_support2",
        "_dev_uncoupled",
        "_deviated",
        "_dilated",
        "_forces",
        "_forces_view",
        "_hazard",
        "_length",
        "_mc_body_grad",
        "_mc_body_max",
        "_mc_calcium",
        "_mc_cap_dist",
        "_mc_cap_prox",
        "_mc_drag",
        "_mc_fric",
        "_mc_stop_k",
        "_mc_withdraw",
        "_p_dev",
        "_reach",
        "_recentre",
        "_retrack",
        "_rm",
        "_rm_reach",
        "_rm_stop",
        "_rng",
        "_rng_turn",
        "_rot",
        "_rot_fric",
        "_rot_relief",
        "_rw",
        "_t",
        "_tip_load2",
        "_tip_seg",
        "_tips",
        "_tips_view",
        "_track",
        "_track_turn",
        "_turn_budget",
        "_turned",
        "_wire_body",
        "_wire_cap",
        "_wire_cap_free",
        "_wire_channel",
        "_wire_fric",
        "cap_thickness",
        "deviations",
        "difficulty",
        "mc_scale",
        "recentred",
        "seed",
    )

    def __init__(self, cfg: Config, seed: int | None = None) -> None:
        sim = cfg.sim
        les = sim.lesion
        seed = sim.seed if seed is None else seed
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed (={seed!r}) must be an integer in [0...2**63-1]")
        missing = [a for a in LINEAR_AXES if a not in cfg.drives]
        if missing:
            raise ValueError(f"drives (={sorted(cfg.drives)}) must include every linear axis: {missing}")
        self._cfg = cfg
        self.seed = seed
        self._rng = random.Random(seed)
        rng = self._rng
        # fixed draw order, independent of the J-CTO score (common random numbers)
        z_hard = rng.gauss(0.0, 1.0)
        z_prox = rng.gauss(0.0, 1.0)
        z_dist = rng.gauss(0.0, 1.0)
        z_tort = rng.gauss(0.0, 1.0)
        u_calc = rng.random()
        u_where = rng.random()
        self._budget = rng.expovariate(1.0)
        length = cfg.procedure.lesion_length
        self._length = length
        jcto = sim.jcto
        self.difficulty = max(0.2, 1.0 + les.difficulty_gain * (jcto - 2.5))
        """Resistance factor of this lesion from its J-CTO score (1 at 2.5)."""
        sigma = les.hardness_sigma
        hard = self.difficulty * math.exp(sigma * z_hard)
        self.cap_thickness = les.cap_thickness
        self._wire_fric = sim.wire.friction
        self._wire_channel = les.channel_friction * hard
        self._wire_cap = les.wire_cap_force * les.channel_relief * hard * math.exp(sigma * z_prox)
        self._mc_fric = sim.mc.friction
        self._mc_drag = sim.mc.drag
        self._mc_cap_prox = les.mc_cap_force * hard * math.exp(sigma * z_prox)
        self._mc_cap_dist = les.mc_cap_force * hard * math.exp(sigma * z_dist)
        self._mc_body_grad = les.mc_body_gradient * hard
        self._mc_body_max = les.mc_body_max * hard
        self._mc_withdraw = les.mc_withdraw_share
        self._dilated = les.dilated_share
        p_calc = les.calcium_probability * jcto / 5.0
        c_len = min(les.calcium_length, 0.5 * length)
        if u_calc < p_calc:
            lo = 0.2 * length + u_where * (0.6 * length - c_len)
            self._calc_lo, self._calc_hi = lo, lo + c_len
        else:
            self._calc_lo, self._calc_hi = math.inf, -math.inf
        self._mc_calcium = les.calcium_force * hard
        self._dev_rate = les.deviation_rate * math.exp(
            les.deviation_jcto_gain * (jcto - 2.5) + sigma * z_tort
        )
        self._dev_scale2 = les.deviation_coupling_scale**2
        self._dev_force = les.deviation_force
        self._dev_k = les.deviation_stiffness
        self._dev_clear = les.deviation_clear
        self._dev_support2 = les.deviation_support_scale**2
        # uncoupled: the gain on top of the worst coupled factor, so the risk never falls as the
        # wires part
        self._dev_uncoupled = les.deviation_uncoupled_gain * (
            1.0 + sim.wire.coupling_reach**2 / les.deviation_coupling_scale**2
        )
        self._dev_calc = les.deviation_calcium_gain
        self._retrack = les.retrack_chance
        self._wire_cap_free = les.wire_cap_force * hard * math.exp(sigma * z_prox)
        self._wire_body = les.wire_body_force * hard
        w = sim.wire
        self._tip_load2 = w.tip_load * w.tip_load_length * w.tip_load_length
        """tip_load * ref_length^2: the column constant of force_capacity (N mm^2)."""
        self._tip_seg = w.tip_segment
        self._reach = w.coupling_reach
        self._rot_relief = 1.0 - w.rotation_relief
        self._recentre = w.recentre_turn
        # turns draw from their own stream, so runs with and without rotation share every other
        # random draw (common random numbers across ablations)
        self._rng_turn = random.Random(seed ^ 0x7075_726E)
        self._turned = 0.0
        self._turn_budget = 0.0
        self._track = math.inf
        """Point where the wire left a false track it was pulled back out of (inf = none)."""
        self._track_turn = 0.0
        self.recentred = 0
        """How many deviations turning the wire has cured."""
        # the MCs' stops: each can close the gap to mc_stop_gap and no further (neither crosses);
        # resistances before the stop scaled so this case reaches its recorded gap
        self.mc_scale = 1.0
        """Factor applied to this case's MC lesion resistances (1 unless mc_stop_gap is set)."""
        self._mc_stop_k = les.mc_stop_gradient
        if les.mc_stop_gap > 0.0:
            half = max(0.0, 0.5 * (length - les.mc_stop_gap))
            self._am_stop, self._rm_stop = half, length - half
            worst = (
                max(self._mc_cap_prox, self._mc_cap_dist)
                + min(self._mc_body_grad * min(half, length), self._mc_body_max)
                + (self._mc_calcium if self._calc_lo <= self._calc_hi else 0.0)
            )
            room = les.mc_reach_force - sim.mc.friction
            if worst > room > 0.0:
                self.mc_scale = room / worst
                self._mc_cap_prox *= self.mc_scale
                self._mc_cap_dist *= self.mc_scale
                self._mc_body_grad *= self.mc_scale
                self._mc_body_max *= self.mc_scale
                self._mc_calcium *= self.mc_scale
        else:
            self._am_stop, self._rm_stop = math.inf, -math.inf
        self._hazard = 0.0
        self._deviated = False
        self._p_dev = 0.0
        self.deviations = 0
        """How many times the antegrade wire has left the channel."""

        st = sim.start
        drives = cfg.drives
        w, m = sim.wire, sim.mc

        def shaft(axis: str, s0: float, direction: float, slack: float, k: float, buckle: float) -> _Shaft:
            return _Shaft(s0, direction, slack, k, min(buckle, drives[axis].force_stop))

        self._aw = shaft("ante_wire", st.ante_wire, 1.0, w.slack, w.stiffness, w.buckle_force)
        self._am = shaft("ante_mc", st.ante_mc, 1.0, m.slack, m.stiffness, m.buckle_force)
        self._rw = shaft("retro_wire", st.retro_wire, -1.0, w.slack, w.stiffness, w.buckle_force)
        self._rm = shaft(
            "retro_mc", length + st.retro_mc_past_distal, -1.0, m.slack, m.stiffness, m.buckle_force
        )
        if not self._am.p <= self._rm.p:
            raise ValueError(
                f"sim.start.ante_mc (={self._am.p:g}) must not lie beyond the retrograde MC tip "
                f"(={self._rm.p:g} mm = L + sim.start.retro_mc_past_distal)"
            )
        self._am_reach = self._am.p
        """Deepest point the antegrade MC tip has reached (s); beyond it nothing is dilated."""
        self._rm_reach = self._rm.p
        self._rot = {a: 0.0 for a, d in drives.items() if d.kind == "rotary"}
        self._rot_fric = sim.rotary_friction
        self._forces = {a: 0.0 for a in drives}
        self._forces_view = MappingProxyType(self._forces)
        self._tips = {"ante_wire": 0.0, "ante_mc": 0.0, "retro_wire": 0.0, "retro_mc": 0.0}
        self._tips_view = MappingProxyType(self._tips)
        self._write_tips()
        self._t = 0.0

    # -- the PlantLoad contract -------------------------------------------------------------

    def step(self, t: float, dt: float, insertion: Mapping[str, float]) -> Mapping[str, float]:
        """Advance to time ``t`` with each axis at ``insertion``; axial load per axis in N.

        Axes missing from ``insertion`` keep their last insertion. Raises ValueError on a
        non-finite insertion (nothing moves). The returned mapping is a live view, updated in
        place by the next step.
        """
        aw, am, rw, rm = self._aw, self._am, self._rw, self._rm
        qa = insertion.get("ante_wire", aw.q)
        qm = insertion.get("ante_mc", am.q)
        qr = insertion.get("retro_wire", rw.q)
        qrm = insertion.get("retro_mc", rm.q)
        total = qa + qm + qr + qrm
        if total - total != 0.0:
            self._reject(insertion)
        self._t = t
        length = self._length
        cap = self.cap_thickness

        # turns of this step (a rotary axis that moved turns its wire)
        turn_a = turn_r = 0.0
        rot = self._rot
        forces = self._forces
        if rot:
            rf = self._rot_fric
            for axis in rot:
                q = insertion.get(axis, rot[axis])
                if q - q != 0.0:
                    self._reject(insertion)
                turn = q - rot[axis]
                if turn != 0.0:
                    forces[axis] = rf
                    if axis == "ante_wire_rot":
                        turn_a = turn if turn > 0.0 else -turn
                    else:
                        turn_r = turn if turn > 0.0 else -turn
                else:
                    forces[axis] = 0.0
                rot[axis] = q

        # wires first: their motion drags the MCs
        pa = aw.p
        pr = rw.p
        pm = am.p
        c = pr - pa
        coupled = 0.0 <= c <= self._reach
        in_lesion = 0.0 <= pa <= length
        r_in = self._wire_fric + (self._wire_channel if in_lesion else 0.0)
        if turn_a != 0.0:
            r_in *= self._rot_relief  # a turning wire slides on dynamic friction
        r_tip = 0.0
        # inside its own MC the wire meets neither the lesion nor the risk of leaving the channel
        out_of_mc = pa > pm
        if out_of_mc and in_lesion:
            if coupled:
                # following the retrograde wire along its channel: only what is left of the cap
                if pa < cap:
                    r_tip = self._wire_cap
            else:
                # guidance fades over a second reach beyond it: no cliff for a wire that lags
                reach = self._reach
                lost = (c - reach) / reach if c > reach > 0.0 else 1.0
                lost = lost if lost < 1.0 else 1.0
                r_tip = lost * (self._wire_cap_free if pa < cap or pa > length - cap else self._wire_body)
        if self._deviated:
            past = pa - self._p_dev
            r_tip += self._dev_force + self._dev_k * (past if past > 0.0 else 0.0)
        # support: what the tip can push before the free segment buckles (support.force_capacity)
        own = pa - pm if out_of_mc else 0.0
        u = own
        if coupled:
            via = pr - pa + (rm.p - pr if rm.p > pr else 0.0)
            u = min(u, via)
        seg = self._tip_seg
        v = u if u > seg else seg
        limit = r_in + self._tip_load2 / (v * v)
        cap_max = aw.limit_max
        aw.limit = limit if limit < cap_max else cap_max
        da = aw.move(qa, r_in + r_tip, r_in)
        r_in = self._wire_fric + (self._wire_channel if 0.0 <= pr <= length else 0.0)
        if turn_r != 0.0:
            r_in *= self._rot_relief
        dr = rw.move(qr, r_in, r_in)
        pa = aw.p
        pr = rw.p
        if self._deviated:
            if pa <= self._p_dev - self._dev_clear:
                self._deviated = False
                self._track = self._p_dev
                self._track_turn = 0.0
            elif turn_a != 0.0:
                self._turned += turn_a
                if self._turned >= self._turn_budget:
                    # the turn found the channel again
                    self._deviated = False
                    self._hazard = 0.0
                    self.recentred += 1
        elif da > 0.0 and out_of_mc and 0.0 <= pa - da < length:
            track = self._track
            if track <= pa:
                # passing the point where it left before: a wire that was not turned tends to
                # slip back into the same false track
                self._track = math.inf
                if self._rng_turn.random() < self._retrack * math.exp(-self._track_turn / self._recentre):
                    self._depart(track)
            if not self._deviated:
                f = 1.0 + c * c / self._dev_scale2 if coupled else self._dev_uncoupled
                if self._calc_lo <= pa < self._calc_hi:
                    f *= self._dev_calc
                self._hazard += da * self._dev_rate * f * (1.0 + u * u / self._dev_support2)
                if self._hazard >= self._budget:
                    self._budget = self._rng.expovariate(1.0)
                    self._depart(pa)
        elif turn_a != 0.0 and self._track < math.inf:
            self._track_turn += turn_a

        # MCs: drag by the wires running through them, then their own insertion.
        # (Two-argument min/max below are written as conditionals: same values, no builtin call.)
        drag = self._mc_drag
        if drag > 0.0:
            ds = da + dr if pr < am.p else da
            if ds != 0.0:
                am.drag(drag * ds)
            ds = dr + da if pa > rm.p else dr
            if ds != 0.0:
                rm.drag(drag * ds)
        fric = self._mc_fric
        withdraw = self._mc_withdraw
        pm = am.p
        prm = rm.p
        body = 0.0
        if pm > 0.0:
            body = self._mc_body_grad * (length if length < pm else pm)
            body_max = self._mc_body_max
            body = body_max if body_max < body else body
        r_adv = body
        if 0.0 <= pm < cap:
            r_adv += self._mc_cap_prox
        if self._calc_lo <= pm < self._calc_hi:
            r_adv += self._mc_calcium
        if pm >= self._rm_reach:
            r_adv *= self._dilated
        if pm > self._am_stop:
            r_adv += self._mc_stop_k * (pm - self._am_stop)
        r_adv += fric
        if pm >= prm:
            r_adv = _WALL
        am.move(qm, r_adv, fric + withdraw * body)
        pm = am.p
        if prm < pm:
            am.p = pm = prm
        self._am_reach = max(self._am_reach, pm)
        body = 0.0
        depth = length - prm
        if depth > 0.0:
            body = self._mc_body_grad * (length if length < depth else depth)
            body_max = self._mc_body_max
            body = body_max if body_max < body else body
        r_adv = body
        if 0.0 <= depth < cap:
            r_adv += self._mc_cap_dist
        if self._calc_lo < prm <= self._calc_hi:
            r_adv += self._mc_calcium
        if prm <= self._am_reach:
            r_adv *= self._dilated
        if prm < self._rm_stop:
            r_adv += self._mc_stop_k * (self._rm_stop - prm)
        r_adv += fric
        if prm <= pm:
            r_adv = _WALL
        rm.move(qrm, fric + withdraw * body, r_adv)
        prm = rm.p
        if pm > prm:
            rm.p = prm = pm
        self._rm_reach = min(self._rm_reach, prm)

        forces["ante_wire"] = aw.force
        forces["ante_mc"] = am.force
        forces["retro_wire"] = rw.force
        forces["retro_mc"] = rm.force
        tips = self._tips  # self._write_tips(), inlined
        tips["ante_wire"] = aw.p
        tips["ante_mc"] = pm
        tips["retro_wire"] = rw.p
        tips["retro_mc"] = prm
        return self._forces_view

    # -- what tests, imaging and checks may look at ------------------------------------------

    def tips(self) -> Mapping[str, float]:
        """True tip positions per linear axis (mm in s); a live view, copy to keep."""
        return self._tips_view

    def forces(self) -> Mapping[str, float]:
        """The forces of the last step per axis (N); a live view."""
        return self._forces_view

    @property
    def t(self) -> float:
        """Time of the last step (s)."""
        return self._t

    @property
    def lesion_length(self) -> float:
        """L, mm."""
        return self._length

    @property
    def deviated(self) -> bool:
        """The antegrade wire is outside the retrograde channel right now."""
        return self._deviated

    @property
    def calcium(self) -> tuple[float, float] | None:
        """The calcified segment (s from, s to) in mm, or None."""
        return (self._calc_lo, self._calc_hi) if self._calc_lo <= self._calc_hi else None

    def absorbed(self, axis: str) -> float:
        """Insertion (mm along s) lost into a prolapse loop of ``axis`` while it stalled."""
        return self._shaft(axis).absorbed

    def max_free_motion(self, axis: str) -> float:
        """Bound on tip motion of ``axis`` with its insertion held: stored elastic compression.

        A stalled or loaded shaft relaxes by at most ``limit / stiffness``; an MC may also be
        dragged within its dead band (``slack``).
        """
        s = self._shaft(axis)
        free = s.limit_max / s.k
        if axis.endswith("_mc"):
            free += 2.0 * s.h
        return free

    def resistance(self, axis: str, s: float, advancing: bool = True, *, coupled: bool = True) -> float:
        """Resistance (N) a linear device's tip meets at ``s`` when advancing or withdrawing.

        For inspection and tests; it ignores contact with the other MC and the deviation state,
        and counts as dilated what the other MC has reached so far. ``coupled``: the antegrade
        wire follows the retrograde wire (else it crosses the lesion on its own).
        """
        length = self._length
        cap = self.cap_thickness
        if axis.endswith("_wire"):
            r = self._wire_fric + (self._wire_channel if 0.0 <= s <= length else 0.0)
            if advancing and axis == "ante_wire" and 0.0 <= s <= length:
                if coupled:
                    r += self._wire_cap if s < cap else 0.0
                else:
                    r += self._wire_cap_free if s < cap or s > length - cap else self._wire_body
            return r
        depth = s if axis == "ante_mc" else length - s
        body = min(self._mc_body_grad * min(depth, length), self._mc_body_max) if depth > 0.0 else 0.0
        if not advancing:
            return self._mc_fric + self._mc_withdraw * body
        r = body
        if 0.0 <= depth < cap:
            r += self._mc_cap_prox if axis == "ante_mc" else self._mc_cap_dist
        lo, hi = self._calc_lo, self._calc_hi
        if (lo <= s < hi) if axis == "ante_mc" else (lo < s <= hi):
            r += self._mc_calcium
        if (s >= self._rm_reach) if axis == "ante_mc" else (s <= self._am_reach):
            r *= self._dilated
        past = s - self._am_stop if axis == "ante_mc" else self._rm_stop - s
        if past > 0.0:
            r += self._mc_stop_k * past
        return self._mc_fric + r

    def deviation_rate(self, coupling: float, unsupported: float = 0.0, calcium: bool = False) -> float:
        """Deviation hazard of the antegrade wire per mm advanced (1/mm).

        ``coupling`` (mm) in ``[0, sim.wire.coupling_reach]``: the wire follows the retrograde
        wire, risk x ``1 + (c / deviation_coupling_scale)^2``; otherwise x the uncoupled gain.
        Times ``1 + (unsupported / deviation_support_scale)^2`` and, inside calcium, its gain.
        """
        if 0.0 <= coupling <= self._reach:
            f = 1.0 + coupling * coupling / self._dev_scale2
        else:
            f = self._dev_uncoupled
        if calcium:
            f *= self._dev_calc
        u = unsupported if unsupported > 0.0 else 0.0
        return self._dev_rate * f * (1.0 + u * u / self._dev_support2)

    def force_capacity(self, unsupported: float) -> float:
        """Axial force (N) the antegrade wire's tip can push with ``unsupported`` mm free, beyond
        its friction: ``support.force_capacity`` with this config (capped by the shaft)."""
        return force_capacity(
            unsupported,
            self._cfg.sim.wire.tip_load,
            self._cfg.sim.wire.tip_load_length,
            self._tip_seg,
            self._aw.limit_max,
        )

    @property
    def mc_stops(self) -> tuple[float, float]:
        """Where the ante and retro MC meet their stop (s, mm); (inf, -inf) when there is none."""
        return self._am_stop, self._rm_stop

    # -- internals ------------------------------------------------------------------------------

    def _shaft(self, axis: str) -> _Shaft:
        shafts = {"ante_wire": self._aw, "ante_mc": self._am, "retro_wire": self._rw, "retro_mc": self._rm}
        if axis not in shafts:
            raise ValueError(f"axis (={axis!r}) must be one of {', '.join(LINEAR_AXES)}")
        return shafts[axis]

    def _depart(self, at: float) -> None:
        """The antegrade wire leaves the channel at ``at`` (s)."""
        self._deviated = True
        self._p_dev = at
        self.deviations += 1
        self._hazard = 0.0
        self._turned = 0.0
        self._turn_budget = self._recentre * self._rng_turn.expovariate(1.0)

    def _write_tips(self) -> None:
        tips = self._tips
        tips["ante_wire"] = self._aw.p
        tips["ante_mc"] = self._am.p
        tips["retro_wire"] = self._rw.p
        tips["retro_mc"] = self._rm.p

    @staticmethod
    def _reject(insertion: Mapping[str, float]) -> None:
        bad = {a: q for a, q in insertion.items() if not (math.isfinite(q) and abs(q) <= 1e300)}
        raise ValueError(f"insertion (={bad or dict(insertion)}) must be finite, in [-1e300...1e300]")
