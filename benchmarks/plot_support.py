"""Redraw docs/plant-support.png: force capacity and deviation risk against unsupported length.

    python benchmarks/plot_support.py [--out docs/plant-support.png]

Uses the default configuration (configs/sim.toml) and the same functions the plant uses
(whih_control.support), so the figure shows the model as it runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import whih_control as wc
from whih_control import support


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "plant-support.png"
    )
    args = ap.parse_args()
    cfg = wc.load_config(wc.default_config_path())
    w, les = cfg.sim.wire, cfg.sim.lesion
    cap = min(w.buckle_force, cfg.drives["ante_wire"].force_stop)
    us = [0.1 * i for i in range(1, 301)]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for gf in (1.0, 4.5, 12.0, 20.0):
        load = gf * 9.80665e-3
        ax1.plot(
            us,
            [support.force_capacity(u, load, w.tip_load_length, w.tip_segment, cap) for u in us],
            label=f"tip load {gf:g} gf" + (" (default)" if abs(load - w.tip_load) < 5e-3 else ""),
        )
    ax1.axhspan(0.6, 1.5, color="0.85", label="CTO cap puncture, ex vivo (0.6-1.5 N)")
    ax1.axvline(cfg.procedure.unsupported_max, color="k", ls=":", label="support limit (unsupported_max)")
    ax1.set_yscale("log")
    ax1.set_xlabel("unsupported length u (mm)")
    ax1.set_ylabel("force capacity at the tip (N)")
    ax1.set_title("column support: min(cap, load (10 mm / max(u, tip))^2)", fontsize=9)
    ax1.legend(fontsize=7)
    base = les.deviation_rate
    gain_unc = les.deviation_uncoupled_gain * (1 + w.coupling_reach**2 / les.deviation_coupling_scale**2)
    for label, f in (
        ("coupled, c = 0.5 mm", 1 + 0.25 / les.deviation_coupling_scale**2),
        ("coupled, c = 2 mm", 1 + 4 / les.deviation_coupling_scale**2),
        ("not coupled", gain_unc),
        ("not coupled, in calcium", gain_unc * les.deviation_calcium_gain),
    ):
        ax2.plot(
            us,
            [base * f * support.deviation_support_factor(u, les.deviation_support_scale) for u in us],
            label=label,
        )
    ax2.set_yscale("log")
    ax2.set_xlabel("unsupported length u (mm)")
    ax2.set_ylabel("deviation hazard per mm advanced (1/mm), J-CTO 2.5")
    ax2.set_title("deviation risk: rate x coupling x (1 + (u / 5 mm)^2)", fontsize=9)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
