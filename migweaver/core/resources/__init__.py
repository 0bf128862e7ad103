"""The objects migweaver reads and writes: the MigLayout and NodeConfig models and their
CRDs, HAMi-style GPU requests, pod allocations, node fit and NodeConfig resolution."""
