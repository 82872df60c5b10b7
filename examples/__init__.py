"""Runnable examples; a package so that ``QUARRY_TRAINERS=examples.custom_trainer`` names one."""
