"""The objects migweaver reads and writes: every `migweaver.io/*` name and the raw API
object shapes (`api`, `bodies`), the MigLayout and NodeConfig models and their CRDs,
HAMi-style GPU requests, pod allocations, node fit and NodeConfig resolution."""
