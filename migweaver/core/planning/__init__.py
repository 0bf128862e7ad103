"""The planner: from a cluster snapshot and the pending GPU pods to one MigLayout per GPU,
the pods' reservations and the reasons for pods left waiting. Modules with a leading
underscore are the planner's own helpers and are not used outside this package."""
