"""GPU backends: NVML for real GPUs and a faithful fake for tests and simulation."""
