"""
resmon: a reactive resource monitor for fleets of machines.

Agents measure, analyzers judge, web processes push every analysis to every
open browser; all of them talk over topics on one bus.
"""

__version__ = "0.1.0"
