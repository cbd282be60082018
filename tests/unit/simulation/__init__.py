"""Deterministic simulation of the provisioning protocol: model, scheduler, workers, tests."""
