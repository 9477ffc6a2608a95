"""Wire support: unsupported length, penetration force capacity, deviation factor (pure functions).

A guidewire pushes and steers only as far as something holds it (docs/DESIGN.md section 1).
The *unsupported length* of a wire is the distance from its tip to what supports it: its own
microcatheter (MC) tip, or, while the two wire tips are coupled inside the channel, the other wire
-- which holds it only as well as that wire is held itself, so the path runs on to the other
wire's own MC tip::

    u_ante  = own_a            own_a = max(0, p_ante_wire - p_ante_mc)
              min(own_a, c + own_r)   while coupled (0 <= c <= reach)
    u_retro = own_r            own_r = max(0, p_retro_mc - p_retro_wire)
              min(own_r, c + own_a)   while coupled

(``c = p_retro_wire - p_ante_wire``.) Keeping the MCs close and the wires coupled keeps both
short: ``own_a + c + own_r`` is the MC gap. The same functions serve the plant (true tips), the
supervisor (estimated tips) and the procedure, so that they all mean the same thing by support.
"""

from __future__ import annotations

__all__ = [
    "deviation_support_factor",
    "force_capacity",
    "unsupported_ante",
    "unsupported_retro",
    "worst_unsupported",
]


def _unsupported(own: float, other_own: float, c: float, reach: float) -> float:
    """A wire's unsupported length from its own stick-out beyond its MC, the other wire's, and
    the coupling ``c`` (retro tip minus ante tip): while coupled within ``reach`` it is supported
    through the other wire too, whichever path is shorter."""
    own = own if own > 0.0 else 0.0
    if 0.0 <= c <= reach:
        via = c + (other_own if other_own > 0.0 else 0.0)
        return via if via < own else own
    return own


def unsupported_ante(aw: float, am: float, rw: float, rm: float, reach: float) -> float:
    """Unsupported length of the antegrade wire (mm) from the four tips (s) and the coupling reach."""
    return _unsupported(aw - am, rm - rw, rw - aw, reach)


def unsupported_retro(aw: float, am: float, rw: float, rm: float, reach: float) -> float:
    """Unsupported length of the retrograde wire (mm); mirror of :func:`unsupported_ante`."""
    return _unsupported(rm - rw, aw - am, rw - aw, reach)


def force_capacity(u: float, tip_load: float, ref_length: float, tip_segment: float, cap: float) -> float:
    """Largest axial force (N) a wire tip delivers with ``u`` mm unsupported.

    Euler column: ``F = pi^2 E I / (K u)^2``, i.e. ``tip_load * (ref_length / u)^2`` given the
    wire's rated tip load (force to buckle the tip at ``ref_length`` mm, the gram-force rating of
    guidewires measured at 10 mm). ``u`` is floored at ``tip_segment`` (the soft distal segment
    buckles on its own however close the MC), and the result is capped at ``cap`` (what the shaft
    transmits). Never increases with ``u``.
    """
    v = u if u > tip_segment else tip_segment
    f = tip_load * (ref_length / v) * (ref_length / v)
    return f if f < cap else cap


def deviation_support_factor(u: float, scale: float) -> float:
    """Factor on the deviation hazard per mm advanced: ``1 + (u / scale)^2``; never falls with u."""
    x = (u if u > 0.0 else 0.0) / scale
    return 1.0 + x * x


def worst_unsupported(
    tips: tuple[float, float, float, float], moves: tuple[float, float, float, float], reach: float
) -> tuple[float, float]:
    """Upper bounds on (u_ante, u_retro) while each tip moves anywhere between where it is and
    ``moves`` mm (along s) from there; tips and moves in the order ante_wire, ante_mc, retro_wire,
    retro_mc. Coupling counts only where it holds over the whole range of motion.
    """
    aw, am, rw, rm = tips
    daw, dam, drw, drm = moves
    aw_lo, aw_hi = (aw, aw + daw) if daw > 0.0 else (aw + daw, aw)
    am_lo = am if dam > 0.0 else am + dam
    rw_lo, rw_hi = (rw, rw + drw) if drw > 0.0 else (rw + drw, rw)
    rm_hi = rm + drm if drm > 0.0 else rm
    own_a = max(0.0, aw_hi - am_lo)
    own_r = max(0.0, rm_hi - rw_lo)
    c_lo, c_hi = rw_lo - aw_hi, rw_hi - aw_lo
    if c_lo >= 0.0 and c_hi <= reach:
        return min(own_a, c_hi + own_r), min(own_r, c_hi + own_a)
    return own_a, own_r
