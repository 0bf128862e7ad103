"""What a MIG GPU is: profiles and their names, the per-model catalog, and the geometry of
instances on a GPU's memory slices (placements, fits, overlaps)."""
