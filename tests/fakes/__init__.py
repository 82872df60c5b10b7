"""Test doubles that implement the real interfaces, and small real models."""
