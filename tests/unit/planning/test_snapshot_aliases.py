"""A snapshot built from MigLayouts (the operator's path) keeps the catalog's profile
aliases, so a geometry written with an older driver's name (HAMi's `7g.79gb`) still
matches the profile the agent reports (`7g.80gb`)."""

from __future__ import annotations

from migweaver.core.mig.catalog import get_model
from migweaver.core.planning.plan import Assignment
from migweaver.core.planning.planner import plan
from migweaver.core.planning.snapshot import snapshot_from_layouts
from migweaver.core.resources.models import (
    GpuInfo,
    MigLayout,
    MigLayoutSpec,
    MigLayoutStatus,
    MigModeStatus,
    PlacementModel,
    ProfileStatus,
)
from tests.unit.planner_helpers import SEED_CONFIG, config, pod


def reported_layout() -> MigLayout:
    model = get_model("A100-SXM4-80GB")
    assert model is not None
    profiles = [
        ProfileStatus(
            name=p.name,
            id=p.profile_id,
            memory_mib=p.memory_mib,
            slices=p.compute_slices,
            placements=[PlacementModel.from_placement(x) for x in p.placements],
            max_count=p.max_count,
        )
        for p in model.profiles
    ]
    return MigLayout(
        spec=MigLayoutSpec(node_name="node-a", gpu_index=0, gpu_uuid="GPU-1"),
        status=MigLayoutStatus(
            gpu=GpuInfo(model="NVIDIA A100-SXM4-80GB", memory_mib=81920, mig_capable=True),
            mig_mode=MigModeStatus(current="Enabled", pending="Enabled"),
            profiles=profiles,
        ),
    )


def test_reported_profiles_answer_to_the_catalogs_aliases() -> None:
    snapshot = snapshot_from_layouts([reported_layout()], {"node-a": "mig"})
    (gpu,) = snapshot.gpus()
    profile = gpu.table.get("7g.79gb")
    assert profile is not None
    assert profile.name == "7g.80gb"


def test_a_whole_gpu_pod_is_placed_under_the_seed_geometries() -> None:
    assert "7g.79gb" in SEED_CONFIG
    snapshot = snapshot_from_layouts([reported_layout()], {"node-a": "mig"})
    result = plan(snapshot, [pod("whole", mem=70000)], config())
    assignment = result.pods["default/whole"]
    assert isinstance(assignment, Assignment)
    assert [d.profile for d in assignment.devices] == ["7g.80gb"]
