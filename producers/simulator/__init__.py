"""Synthetic, labelled TokenTrail traffic: humans of several habits and tokenmaxxing bots."""

from producers.simulator.archetypes import BOTS, HUMANS
from producers.simulator.org import DEFAULT_ORGS, Org, Scenario, UserSpec, build, labels, simulate

__all__ = ["BOTS", "DEFAULT_ORGS", "HUMANS", "Org", "Scenario", "UserSpec", "build", "labels", "simulate"]
