"""The operator's decisions: what a round reads from the cluster, which writes a plan
becomes, when a reserved pod is released, the pod's condition and Events, admission
(gating), batching, leadership and the rows of the metrics."""
