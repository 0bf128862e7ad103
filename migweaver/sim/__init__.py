"""Discrete-event simulation of a fleet over the real planner and agent."""
