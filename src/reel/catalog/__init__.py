"""The model catalog: which model ids exist, what each accepts, and how each runs (data only)."""
