"""``[sim]`` and ``[imaging]``: the simulated plant and the tip-imaging source.

Every number of the plant is a setting with a default, a plausible range and its source. Where the
literature gives no number (most of the lesion mechanics), the default is our engineering estimate,
tuned so that a lesion of median difficulty (J-CTO 2.5) crosses with forces below the drives'
default alarm (1.5 N wires, 2 N MCs) most of the time and harder lesions produce force rises and
stalls. Sources are named in each ``doc``; "estimate" means ours.
"""

from __future__ import annotations

from dataclasses import dataclass

from firmware_iface.spec import setting

__all__ = [
    "ImagingConfig",
    "LesionConfig",
    "McConfig",
    "SimConfig",
    "StartConfig",
    "WireConfig",
]


@dataclass(frozen=True, slots=True)
class StartConfig:
    """``[sim.start]``: where the tips are when the simulated procedure begins (s, mm)."""

    ante_wire: float = setting(
        -15.0, unit="mm", lo=-500.0, hi=500.0, doc="antegrade wire tip (inside the antegrade MC)"
    )
    ante_mc: float = setting(
        -2.0, unit="mm", lo=-500.0, hi=500.0, doc="antegrade MC tip, proximal of the cap"
    )
    retro_wire: float = setting(
        -8.0,
        unit="mm",
        lo=-500.0,
        hi=500.0,
        doc="retrograde wire tip: it crossed the lesion and tipped into the antegrade MC",
    )
    retro_mc_past_distal: float = setting(
        2.0,
        unit="mm",
        lo=-500.0,
        hi=500.0,
        doc="retrograde MC tip distance beyond the distal cap (tip at L + this)",
    )


@dataclass(frozen=True, slots=True)
class WireConfig:
    """``[sim.wire]``: guidewire shaft mechanics (both wires)."""

    slack: float = setting(
        0.5,
        unit="mm",
        lo=0.0,
        hi=10.0,
        doc="backlash (dead band) between insertion and tip; 0.2-2 mm in robotic drives (estimate)",
    )
    stiffness: float = setting(
        4.0,
        unit="N/mm",
        lo=0.1,
        hi=1000.0,
        doc="axial stiffness of the shaft once the slack is taken up; 1-20 N/mm (estimate)",
    )
    friction: float = setting(
        0.15,
        unit="N",
        lo=0.0,
        hi=5.0,
        doc="Coulomb friction of the shaft in guide and MC; 0.05-0.5 N (PTFE/hydrophilic wires, bench)",
    )
    buckle_force: float = setting(
        2.5,
        unit="N",
        lo=0.1,
        hi=50.0,
        doc="axial force at which the shaft buckles and the tip stalls; 1-4 N for 0.014 in wires",
    )
    tip_load: float = setting(
        0.12,
        unit="N",
        lo=0.001,
        hi=5.0,
        doc="rated tip load: force that buckles the tip held tip_load_length from its support; "
        "~0.01 N (1 gf) workhorse to ~0.2 N (20 gf) penetration wires (manufacturer ratings); 12 gf",
    )
    tip_load_length: float = setting(
        10.0, unit="mm", lo=0.1, hi=100.0, doc="free length at which tip_load is rated (10 mm)"
    )
    tip_segment: float = setting(
        3.0,
        unit="mm",
        lo=0.1,
        hi=50.0,
        doc="soft distal segment that buckles on its own however close the support: the shortest "
        "unsupported length counted (estimate)",
    )
    coupling_reach: float = setting(
        2.0,
        unit="mm",
        lo=0.0,
        hi=20.0,
        doc="the two wire tips guide each other (coupled) while 0 <= coupling <= this (estimate)",
    )
    rotation_relief: float = setting(
        0.5,
        lo=0.0,
        hi=1.0,
        doc="share of a wire's friction removed while it turns (static to dynamic friction) (estimate)",
    )
    recentre_turn: float = setting(
        120.0,
        unit="deg",
        lo=1.0,
        hi=100_000.0,
        doc="turn for a 63 % chance to re-centre a deviated tip, and by which turning while "
        "pulled back lowers the chance to re-enter the same false track e-fold (estimate)",
    )


@dataclass(frozen=True, slots=True)
class McConfig:
    """``[sim.mc]``: microcatheter shaft mechanics (both MCs)."""

    slack: float = setting(
        0.5, unit="mm", lo=0.0, hi=10.0, doc="backlash between insertion and tip; 0.2-2 mm (estimate)"
    )
    stiffness: float = setting(
        6.0, unit="N/mm", lo=0.1, hi=1000.0, doc="axial shaft stiffness; 2-30 N/mm (estimate)"
    )
    friction: float = setting(
        0.3,
        unit="N",
        lo=0.0,
        hi=5.0,
        doc="Coulomb friction of the shaft in guide and vessel; 0.1-0.8 N (bench, estimate)",
    )
    buckle_force: float = setting(
        3.0,
        unit="N",
        lo=0.1,
        hi=50.0,
        doc="axial force the MC transmits before it buckles and stalls; 2-5 N (estimate)",
    )
    drag: float = setting(
        0.15,
        lo=0.0,
        hi=1.0,
        doc="fraction of a wire's tip motion passed to an MC it runs through, bounded by the MC's "
        "slack; 0.05-0.3 (estimate)",
    )


@dataclass(frozen=True, slots=True)
class LesionConfig:
    """``[sim.lesion]``: the CTO (length from ``procedure.lesion_length``) at J-CTO 2.5.

    Resistances scale with the difficulty factor ``1 + difficulty_gain * (jcto - 2.5)`` (at least
    ``0.2``) times a per-lesion log-normal draw; the deviation rate scales with
    ``exp(deviation_jcto_gain * (jcto - 2.5))``.
    """

    cap_thickness: float = setting(
        1.5, unit="mm", lo=0.1, hi=10.0, doc="thickness of the fibrous caps; 1-3 mm (histology)"
    )
    wire_cap_force: float = setting(
        1.0,
        unit="N",
        lo=0.0,
        hi=10.0,
        doc="cap puncture force for a wire without a channel; 0.6-1.5 N (ex vivo CTO caps)",
    )
    channel_relief: float = setting(
        0.25,
        lo=0.0,
        hi=1.0,
        doc="share of the cap force left for a wire following the retrograde channel (estimate)",
    )
    channel_friction: float = setting(
        0.1,
        unit="N",
        lo=0.0,
        hi=5.0,
        doc="extra friction of a wire inside the lesion channel; 0.05-0.3 N (estimate)",
    )
    mc_cap_force: float = setting(
        0.7,
        unit="N",
        lo=0.0,
        hi=20.0,
        doc="cap entry force of an MC riding the retrograde wire; 0.3-3 N (MC crossing forces, bench)",
    )
    mc_body_gradient: float = setting(
        0.07,
        unit="N/mm",
        lo=0.0,
        hi=5.0,
        doc="MC resistance growth per mm of MC inside the lesion body; 0.02-0.3 N/mm (estimate)",
    )
    mc_body_max: float = setting(
        1.0,
        unit="N",
        lo=0.0,
        hi=20.0,
        doc="ceiling of that body resistance (the channel is pre-dilated by the wire) (estimate)",
    )
    calcium_probability: float = setting(
        0.4,
        lo=0.0,
        hi=1.0,
        doc="chance of a calcified segment at J-CTO 5 (scaled by J-CTO/5; calcification is a "
        "J-CTO point) (estimate)",
    )
    calcium_force: float = setting(
        1.0, unit="N", lo=0.0, hi=20.0, doc="extra MC resistance inside a calcified segment (estimate)"
    )
    calcium_length: float = setting(
        3.0, unit="mm", lo=0.1, hi=50.0, doc="length of a calcified segment; 2-10 mm (estimate)"
    )
    dilated_share: float = setting(
        0.3,
        lo=0.0,
        hi=1.0,
        doc="share of body and calcium resistance an MC meets where the other MC has already "
        "been (the segment is dilated) (estimate)",
    )
    mc_withdraw_share: float = setting(
        0.3, lo=0.0, hi=1.0, doc="share of the body resistance felt when withdrawing an MC (estimate)"
    )
    difficulty_gain: float = setting(
        0.3,
        unit="1/point",
        lo=0.0,
        hi=2.0,
        doc="relative resistance change per J-CTO point (estimate)",
    )
    hardness_sigma: float = setting(
        0.25, lo=0.0, hi=2.0, doc="log-normal spread of resistances between lesions (estimate)"
    )
    deviation_rate: float = setting(
        0.01,
        unit="1/mm",
        lo=0.0,
        hi=10.0,
        doc="antegrade-wire deviation risk per mm advanced at zero coupling, J-CTO 2.5 (estimate)",
    )
    deviation_coupling_scale: float = setting(
        1.0,
        unit="mm",
        lo=0.01,
        hi=100.0,
        doc="coupling at which the deviation risk doubles (risk x (1 + (c/scale)^2)) (estimate)",
    )
    deviation_jcto_gain: float = setting(
        0.5, unit="1/point", lo=0.0, hi=5.0, doc="log deviation risk per J-CTO point (estimate)"
    )
    deviation_support_scale: float = setting(
        5.0,
        unit="mm",
        lo=0.1,
        hi=1000.0,
        doc="deviation risk x (1 + (unsupported length / scale)^2) (estimate)",
    )
    deviation_uncoupled_gain: float = setting(
        4.0,
        lo=1.0,
        hi=1000.0,
        doc="deviation risk factor for a wire not coupled to the retrograde wire (it cannot follow "
        "the channel by touch) (estimate)",
    )
    deviation_calcium_gain: float = setting(
        2.0, lo=1.0, hi=100.0, doc="deviation risk factor inside a calcified segment (estimate)"
    )
    retrack_chance: float = setting(
        0.6,
        lo=0.0,
        hi=1.0,
        doc="chance that a wire pulled back out of a false track, not turned, re-enters it when it "
        "passes the point of departure again (estimate)",
    )
    wire_body_force: float = setting(
        0.3,
        unit="N",
        lo=0.0,
        hi=10.0,
        doc="tip resistance of a wire crossing the lesion body on its own, not following the "
        "retrograde wire (estimate; cf. cap puncture 0.6-1.5 N)",
    )
    mc_stop_gap: float = setting(
        0.0,
        unit="mm",
        lo=0.0,
        hi=200.0,
        doc="the MCs can close the gap to this and no further (a case's recorded gap: neither MC "
        "can cross); 0 = no such stop",
    )
    mc_stop_gradient: float = setting(
        5.0, unit="N/mm", lo=0.1, hi=1000.0, doc="MC resistance rise per mm past its stop (estimate)"
    )
    mc_reach_force: float = setting(
        1.6,
        unit="N",
        lo=0.1,
        hi=50.0,
        doc="with mc_stop_gap set, the MC resistances before the stop are scaled per case to stay "
        "below this, so the case reaches its recorded gap (keep below the MC force_alarm)",
    )
    deviation_force: float = setting(
        0.2, unit="N", lo=0.0, hi=10.0, doc="force step when the wire leaves the channel (estimate)"
    )
    deviation_stiffness: float = setting(
        1.5,
        unit="N/mm",
        lo=0.0,
        hi=100.0,
        doc="force rise per mm advanced outside the channel (subintimal track); 0.3-2 N/mm (estimate)",
    )
    deviation_clear: float = setting(
        0.3,
        unit="mm",
        lo=0.0,
        hi=20.0,
        doc="withdraw the wire this far behind the deviation point to re-enter the channel "
        "(a rewind must exceed it plus the distance the force rise takes to reach the alarm, "
        "(alarm - friction - deviation_force) / deviation_stiffness ~ 0.7 mm) (estimate)",
    )


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Simulated drives and plant."""

    enabled: bool = setting(True, doc="start simulated CiA 402 drives on the bus")
    seed: int = setting(0, lo=0, hi=2**63 - 1, doc="seed of every random draw of the simulation")
    jcto: float = setting(2.5, lo=0.0, hi=5.0, doc="J-CTO score of the simulated lesion (0-5)")
    rotary_friction: float = setting(
        0.02,
        unit="N",
        lo=0.0,
        hi=5.0,
        doc="axial-equivalent load of a rotating wire (torque drive); 0-0.1 (estimate)",
    )
    # frozen sections are immutable, so one shared default instance is safe
    start: StartConfig = setting(StartConfig(), doc="starting tip positions, [sim.start]")  # noqa: RUF009
    wire: WireConfig = setting(WireConfig(), doc="guidewire mechanics, [sim.wire]")  # noqa: RUF009
    mc: McConfig = setting(McConfig(), doc="microcatheter mechanics, [sim.mc]")  # noqa: RUF009
    lesion: LesionConfig = setting(LesionConfig(), doc="CTO lesion mechanics, [sim.lesion]")  # noqa: RUF009


@dataclass(frozen=True, slots=True)
class ImagingConfig:
    """External tip measurements (fluoroscopy tip tracking)."""

    source: str = setting("sim", choices=("sim", "none", "external"), doc="where tip measurements come from")
    frame_rate: float = setting(
        7.5, unit="frames/s", lo=0.1, hi=60.0, doc="imaging frame rate (clinical 4-15)"
    )
    latency_ms: float = setting(100.0, unit="ms", lo=0.0, hi=1000.0, doc="capture-to-arrival delay")
    noise_mm: float = setting(0.2, unit="mm", lo=0.0, hi=10.0, doc="tip position noise (1 sigma)")
    dropout: float = setting(0.05, lo=0.0, hi=1.0, doc="probability that a frame is lost")
    tip_miss: float = setting(
        0.0,
        lo=0.0,
        hi=1.0,
        doc="probability that one tip is not seen in a delivered frame (partial visibility; "
        "overlapping devices, foreshortening) (estimate 0-0.2)",
    )
