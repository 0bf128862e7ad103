"""The device ids the plugin lists (pure)."""

from __future__ import annotations

from migweaver.agent.deviceplugin.devices import (
    DeviceEntry,
    PluginGpu,
    device_id,
    device_list,
    gpu_of_device,
)

UUID = "GPU-936619fc-f6a1-74a8-0bc6-ecf6b3269313"


def test_ids_per_gpu_follow_mode_slots_and_health() -> None:
    gpus = [
        PluginGpu("GPU-b", 1, mig=False, slots=3, healthy=False),
        PluginGpu("GPU-a", 0, mig=True, slots=4, healthy=True),
    ]
    assert device_list(gpus) == (
        DeviceEntry("GPU-a::0", "Healthy"),
        DeviceEntry("GPU-a::1", "Healthy"),
        DeviceEntry("GPU-a::2", "Healthy"),
        DeviceEntry("GPU-a::3", "Healthy"),
        DeviceEntry("GPU-b::0", "Unhealthy"),
        DeviceEntry("GPU-b::1", "Unhealthy"),
        DeviceEntry("GPU-b::2", "Unhealthy"),
    )


def test_ids_fit_the_kubelets_limit_and_name_their_gpu() -> None:
    long_id = device_id(UUID, 99)
    assert len(long_id) <= 63
    assert gpu_of_device(long_id) == UUID
    assert gpu_of_device("nonsense") is None
    assert gpu_of_device("GPU-a::x") is None
