"""The file schema: HAMi's `nvidia:` block as typed, validated models.

The names of the geometry ConfigMap and its key live here too. The models only type the
input; the catalog checks (profiles known, geometries fit) are in `checks`.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field

from migweaver.core.config.allowed_geometry import Geometry
from migweaver.core.mig.catalog import GpuModel, gpu_name_matches
from migweaver.core.resources.requests import RequestDefaults

__all__ = [
    "CONFIGMAP_NAME",
    "CONFIG_KEY",
    "CONFIG_KEYS",
    "HAMI_CONFIG_KEY",
    "DeviceConfig",
    "KnownMigGeometry",
    "MigGeometryEntry",
    "NvidiaConfig",
]

CONFIGMAP_NAME: Final = "migweaver-device-config"
"""The ConfigMap the operator watches (namespace of the operator)."""
CONFIG_KEY: Final = "config.yaml"
"""The ConfigMap data key that holds the configuration."""
HAMI_CONFIG_KEY: Final = "device-config.yaml"
"""The key of HAMi's scheduler ConfigMap (`hami-scheduler-device`), accepted as it is."""
CONFIG_KEYS: Final = (CONFIG_KEY, HAMI_CONFIG_KEY)
"""Either data key holds the configuration (one of them per ConfigMap)."""


class MigGeometryEntry(BaseModel):
    """One `{name, memory, count}` item of a geometry (HAMi's `MigTemplate`).

    `count` is only typed here; `load_device_config` reports a count below 1 with the
    model, geometry and profile it belongs to.
    """

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)

    name: str = Field(min_length=1)
    memory: int | None = Field(default=None, ge=1)
    """MiB as configured (HAMi matches `nvidia.com/gpumem` against it); NVML's size wins."""
    count: int


class KnownMigGeometry(BaseModel):
    """One `knownMigGeometries` entry: the geometries the listed GPU models may take.

    `allowed_geometries` is always the nested form (a list of geometries, each a list of
    entries); a flat list in the input is grouped by `load_device_config` first.
    """

    model_config = ConfigDict(
        strict=True, extra="allow", frozen=True, validate_by_name=True, validate_by_alias=True
    )

    models: list[str] = Field(min_length=1)
    allowed_geometries: list[Annotated[list[MigGeometryEntry], Field(min_length=1)]] = Field(
        alias="allowedGeometries", min_length=1
    )


class NvidiaConfig(BaseModel):
    """HAMi's `nvidia:` block with HAMi's defaults. Unknown keys are kept, not errors:
    HAMi has many more (and adds new ones), and they do not concern MIG planning."""

    model_config = ConfigDict(
        strict=True, extra="allow", frozen=True, validate_by_name=True, validate_by_alias=True
    )

    resource_count_name: str = Field(
        default="nvidia.com/gpu", alias="resourceCountName", min_length=1
    )
    resource_memory_name: str = Field(
        default="nvidia.com/gpumem", alias="resourceMemoryName", min_length=1
    )
    resource_memory_percentage_name: str = Field(
        default="nvidia.com/gpumem-percentage", alias="resourceMemoryPercentageName", min_length=1
    )
    resource_core_name: str = Field(
        default="nvidia.com/gpucores", alias="resourceCoreName", min_length=1
    )
    resource_priority_name: str = Field(
        default="nvidia.com/priority", alias="resourcePriorityName", min_length=1
    )
    overwrite_env: bool = Field(default=False, alias="overwriteEnv")
    default_memory: int = Field(default=0, alias="defaultMemory", ge=0)
    # Cores are a percentage of the device's SMs.
    default_cores: int = Field(default=0, alias="defaultCores", ge=0, le=100)
    default_gpu_num: int = Field(default=1, alias="defaultGPUNum", ge=1)
    device_split_count: int = Field(default=10, alias="deviceSplitCount", ge=1)
    device_memory_scaling: float = Field(default=1.0, alias="deviceMemoryScaling", gt=0)
    device_core_scaling: float = Field(default=1.0, alias="deviceCoreScaling", gt=0)
    known_mig_geometries: list[KnownMigGeometry] = Field(
        default_factory=list, alias="knownMigGeometries"
    )


class DeviceConfig(BaseModel):
    """The whole device configuration: the `nvidia:` block (other vendors are ignored)."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    nvidia: NvidiaConfig

    def geometries_for(self, gpu_name: str, model: GpuModel | None) -> list[Geometry] | None:
        """The geometries a GPU may take, or None when no entry names it (any valid layout).

        `gpu_name` is NVML's device name, `model` its catalog model if known. The first
        matching `knownMigGeometries` entry wins, as in HAMi.
        """
        for entry in self.nvidia.known_mig_geometries:
            if any(gpu_name_matches(name, gpu_name, model) for name in entry.models):
                return [
                    Geometry(
                        profiles=tuple((item.name, item.count) for item in geometry),
                        memory=tuple(item.memory for item in geometry),
                    )
                    for geometry in entry.allowed_geometries
                ]
        return None

    def request_defaults(self) -> RequestDefaults:
        """Resource names and request defaults for parsing pods."""
        n = self.nvidia
        return RequestDefaults(
            resource_count=n.resource_count_name,
            resource_memory=n.resource_memory_name,
            resource_memory_percentage=n.resource_memory_percentage_name,
            resource_cores=n.resource_core_name,
            resource_priority=n.resource_priority_name,
            default_memory=n.default_memory,
            default_cores=n.default_cores,
            default_gpu_num=n.default_gpu_num,
        )
