"""Suites shipped with agentrl-lights (found through the `agentrl.suites` entry point)."""
