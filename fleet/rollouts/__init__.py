"""Staged rollouts of a release over many gateways: phases, thresholds, the engine."""
