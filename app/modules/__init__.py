"""Quarry's bounded modules. Each exposes only ``module: ModuleSpec`` from its package."""
