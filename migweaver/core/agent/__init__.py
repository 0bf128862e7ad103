"""The node agent's decisions: the steps from a GPU's actual MIG state to its MigLayout
spec, which waiting pod a device plugin Allocate call is for, and the node's extended
resources."""
