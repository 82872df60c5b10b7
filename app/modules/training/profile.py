"""The reference profile a version is registered with: the kernel's builder (the registry builds
profiles from uploaded rows with the same one)."""

from app.kernel.reference_profile import MAX_CATEGORIES, column_profile, reference_profile

__all__ = ["MAX_CATEGORIES", "column_profile", "reference_profile"]
