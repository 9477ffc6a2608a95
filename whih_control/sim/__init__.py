"""Simulation of the world the robot moves in: the plant, tip imaging and patient cohorts.

``Plant`` (wire and MC mechanics in a CTO channel) is handed to the simulated drives as a
:class:`firmware_iface.types.PlantLoad`; ``ImagingSource`` delivers fluoroscopy-like tip
measurements from it; ``cohort`` builds scenario sets such as the published case series.
"""

from whih_control.sim.cohort import COHORTS, Scenario, cohort
from whih_control.sim.imaging import ImagingSource
from whih_control.sim.plant import Plant

__all__ = ["COHORTS", "ImagingSource", "Plant", "Scenario", "cohort"]
