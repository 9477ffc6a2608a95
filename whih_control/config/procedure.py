"""``[procedure]``: the WHIH sequence's geometry, steps, speeds and bounds."""

from __future__ import annotations

import math
from dataclasses import dataclass

from firmware_iface.spec import setting

__all__ = ["ProcedureConfig"]


@dataclass(frozen=True, slots=True)
class ProcedureConfig:
    """Geometry targets and bounds of the WHIH procedure (our defaults; the paper gives none)."""

    lesion_length: float = setting(
        27.6, unit="mm", lo=1.0, hi=200.0, doc="CTO length L from angiography (paper median 27.6)"
    )
    gap_target: float = setting(4.5, unit="mm", lo=0.0, hi=100.0, doc="MC gap target (paper median)")
    gap_min: float = setting(2.0, unit="mm", lo=0.0, hi=100.0, doc="MC gap hard window floor")
    gap_max: float = setting(20.0, unit="mm", lo=0.0, hi=100.0, doc="MC gap hard window ceiling")
    coupling_target: float = setting(
        0.5, unit="mm", lo=0.0, hi=20.0, doc="wire coupling target: retro wire tip - ante wire tip"
    )
    coupling_max: float = setting(2.0, unit="mm", lo=0.0, lo_open=True, hi=20.0, doc="wire coupling limit")
    distal_margin: float = setting(
        5.0, unit="mm", lo=0.0, hi=50.0, doc="crossed when the ante wire tip is this far past L"
    )
    step: float = setting(
        1.0, unit="mm", lo=0.05, hi=10.0, doc="length of one retrograde step in hand-in-hand"
    )
    wire_speed: float = setting(
        4.0, unit="mm/s", lo=0.0, lo_open=True, hi=50.0, doc="wire speed (robotic 2-20 mm/s)"
    )
    mc_speed: float = setting(2.0, unit="mm/s", lo=0.0, lo_open=True, hi=50.0, doc="MC speed")
    untip_clearance: float = setting(
        1.5, unit="mm", lo=0.1, hi=20.0, doc="retro wire tip this far distal of the ante MC tip"
    )
    max_steps: int = setting(400, lo=1, hi=100_000, doc="bound on hand-in-hand steps")
    max_rewinds: int = setting(5, lo=0, hi=100, doc="bound on rewinds (back-and-forth)")
    rewind_distance: float = setting(
        2.0, unit="mm", lo=0.1, hi=20.0, doc="how far both wires back off in one rewind"
    )
    phase_timeout_s: float = setting(
        120.0, unit="s", lo=1.0, hi=36_000.0, doc="bound on the time spent in one motion phase"
    )
    max_time_s: float = setting(1800.0, unit="s", lo=1.0, hi=86_400.0, doc="bound on the whole procedure")
    confirm_crossing: bool = setting(False, doc="crossing needs an operator confirm (true on real hardware)")
    approach_tolerance: float = setting(
        0.5, unit="mm", lo=0.0, hi=20.0, doc="approach ends when the gap is within this of gap_target"
    )
    position_tolerance: float = setting(
        0.1, unit="mm", lo=0.001, hi=5.0, doc="a tip within this of its target has reached it"
    )
    stall_time_s: float = setting(
        2.0, unit="s", lo=0.05, hi=600.0, doc="an MC under force with no progress this long has stalled"
    )
    stall_progress: float = setting(
        0.1, unit="mm", lo=0.0, hi=10.0, doc="tip progress below this counts as no progress (stall)"
    )
    stall_force_ratio: float = setting(
        1.0, lo=0.1, hi=1.0, doc="stall needs force >= this x the axis' force_alarm"
    )
    deviation_force_ratio: float = setting(
        0.8, lo=0.1, hi=1.0, doc="hand-in-hand rewinds when a wire's force >= this x its force_alarm"
    )
    withdraw_distance: float = setting(
        10.0, unit="mm", lo=0.0, hi=200.0, doc="how far the retrograde wire and MC pull back after crossing"
    )

    unsupported_max: float = setting(
        12.0,
        unit="mm",
        lo=0.5,
        hi=200.0,
        doc="support limit: no command makes a wire's unsupported length (tip to its support) "
        "exceed this; while it holds the retrograde MC may withdraw past gap_max in hand-in-hand",
    )
    rewinds_per_10mm: float = setting(
        1.0,
        lo=0.0,
        hi=100.0,
        doc="extra rewinds allowed per 10 mm of lesion (bound = max_rewinds + floor(this * L / 10))",
    )
    step_min: float = setting(
        0.25, unit="mm", lo=0.05, hi=10.0, doc="a step is halved after each rewind, down to this"
    )
    spin_speed: float = setting(
        270.0,
        unit="deg/s",
        lo=0.0,
        hi=3600.0,
        doc="wire spin while advancing through a hard segment (0 = off)",
    )
    spin_turn: float = setting(
        180.0, unit="deg", lo=0.0, hi=3600.0, doc="spin swings +/- this about the start angle"
    )
    spin_force_ratio: float = setting(
        0.3,
        lo=0.0,
        hi=1.0,
        doc="a segment is hard (spin) when the advancing wire's force >= this x its force_alarm",
    )
    rewind_turn: float = setting(
        180.0,
        unit="deg",
        lo=0.0,
        hi=3600.0,
        doc="turn of the antegrade wire while it is pulled back in a rewind (alternating direction)",
    )
    lag_rewind: float = setting(
        0.5,
        unit="mm",
        lo=0.0,
        hi=10.0,
        doc="hand-in-hand rewinds when imaging keeps finding the antegrade wire tip behind where its "
        "drive put it (a wire buckling into a false track): the frames' corrections of that tip, "
        "summed with each older one halved, below -this (0 = off)",
    )
    recouple_speed: float = setting(
        10.0,
        unit="mm/s",
        lo=0.0,
        lo_open=True,
        hi=50.0,
        doc="retrograde wire speed while a rewind closes an open coupling (it advances in its own "
        "channel; the antegrade wire waits): it must take up its slack and close the coupling "
        "within the supervisor's coupling grace",
    )
    ablations: tuple[str, ...] = setting(
        (),
        choices=("no-mc-approach", "no-coupling", "no-rotation"),
        doc="parts of the technique left out (trials): the MCs stay where the case starts them; "
        "the antegrade wire advances alone; no wire rotation",
    )

    def rewind_bound(self) -> int:
        """Rewinds allowed for this lesion: ``max_rewinds + floor(rewinds_per_10mm * L / 10)``."""
        return self.max_rewinds + math.floor(self.rewinds_per_10mm * self.lesion_length / 10.0)

    def problems(self) -> list[tuple[str, str]]:
        """Cross-field checks within this section: (key, message)."""
        out: list[tuple[str, str]] = []
        if not self.gap_min < self.gap_target < self.gap_max:
            out.append(
                (
                    "gap_target",
                    f"must lie strictly inside the window (got {self.gap_target:g}, allowed "
                    f"({self.gap_min:g}...{self.gap_max:g}) from gap_min/gap_max)",
                )
            )
        if not self.coupling_target < self.coupling_max:
            out.append(
                (
                    "coupling_target",
                    f"must be below coupling_max (got {self.coupling_target:g}, allowed "
                    f"[0...{self.coupling_max:g}))",
                )
            )
        if not self.untip_clearance < self.gap_target:
            out.append(
                (
                    "untip_clearance",
                    f"must be below gap_target so the retro wire stays inside the gap (got "
                    f"{self.untip_clearance:g}, allowed < {self.gap_target:g})",
                )
            )
        if len(set(self.ablations)) != len(self.ablations):
            out.append(("ablations", f"must not repeat a name (got {list(self.ablations)})"))
        if self.step_min > self.step:
            out.append(
                ("step_min", f"must not exceed step (got {self.step_min:g}, allowed <= {self.step:g})")
            )
        return out
