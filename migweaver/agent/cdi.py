"""Keeps the CDI spec of the node's GPUs and MIG instances current (`migweaver agent --cdi`).

After every agent pass (a layout change included) the spec is rebuilt from the agent's
latest observations and the driver's MIG minors (`migweaver.core.agent.cdi` decides what
goes in) and written only when it changed, atomically (a temporary file renamed over the
old one), so a runtime never reads half a spec. What cannot be described (a capability
minor the driver has not listed yet, a missing device node) is logged once per change.

`proc_root` and `dev_root` are where the host's `/proc` and `/dev` are seen from the
agent (both `/` in the DaemonSet; tests point them at a fake tree). Paths in the spec
are host paths.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final

from migweaver.agent.backends.protocol import GpuDevice
from migweaver.agent.reconciler import GpuObservation
from migweaver.core.agent.cdi import (
    CONTROL_NODES,
    CdiGpu,
    CdiInstance,
    CdiPlan,
    cdi_spec,
    parse_mig_minors,
)
from migweaver.logs import get_logger

__all__ = ["DEFAULT_CDI_DIR", "SPEC_FILE", "CdiSpecWriter"]

log = get_logger("migweaver.agent.cdi")

DEFAULT_CDI_DIR: Final = "/var/run/cdi"
SPEC_FILE: Final = "migweaver-nvidia-gpu.json"
"""CDI spec files are named `<vendor>-<class>.json`; ours next to any nvidia-ctk one."""
_MIG_MINORS: Final = "driver/nvidia-caps/mig-minors"


def cdi_gpus(devices: Iterable[GpuDevice], observations: dict[int, GpuObservation]) -> list[CdiGpu]:
    """The GPUs to describe: every served GPU, with the MIG instances last observed on it."""
    gpus = []
    for device in devices:
        observation = observations.get(device.index)
        instances: tuple[CdiInstance, ...] = ()
        if observation is not None and observation.mig_mode.current:
            instances = tuple(
                CdiInstance(i.uuid, i.gi_id, i.ci_ids[0])
                for i in observation.instances
                if i.uuid and i.ci_ids
            )
        minor = device.minor_number if device.minor_number is not None else device.index
        gpus.append(CdiGpu(device.uuid, minor, instances))
    return gpus


class CdiSpecWriter:
    """Writes `<directory>/migweaver-nvidia-gpu.json` for what `source()` returns."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        source: Callable[[], list[CdiGpu]],
        *,
        proc_root: str | os.PathLike[str] = "/proc",
        dev_root: str | os.PathLike[str] = "/",
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / SPEC_FILE
        self._source = source
        self._proc = Path(proc_root)
        self._dev = Path(dev_root)
        self._written: dict[str, Any] | None = None
        self._problems: tuple[str, ...] = ()

    def refresh(self) -> None:
        """Rebuild the spec; write it if it changed. Errors are logged, never raised:
        a spec that cannot be written must not stop the agent from reconciling."""
        plan = self.plan()
        if plan.problems != self._problems:
            for problem in plan.problems:
                log.warning("CDI spec: device left out", spec=str(self.path), detail=problem)
            self._problems = plan.problems
        if plan.spec != self._written:
            try:
                if plan.device_names:
                    self._write(plan.spec)
                else:  # CDI refuses a spec without devices: none is better than a bad one
                    self.path.unlink(missing_ok=True)
            except OSError as exc:
                log.error("cannot write the CDI spec", spec=str(self.path), error=str(exc))
            else:
                self._written = plan.spec
                log.info("CDI spec written", spec=str(self.path), devices=list(plan.device_names))

    def plan(self) -> CdiPlan:
        gpus = self._source()
        minors = self._read_minors()
        return cdi_spec(gpus, minors, present=self._present(gpus, minors))

    def _read_minors(self) -> dict[str, int]:
        try:
            return parse_mig_minors((self._proc / _MIG_MINORS).read_text())
        except FileNotFoundError:
            return {}  # no MIG-capable driver: only whole GPUs can be described
        except OSError as exc:
            log.warning(
                "cannot read the MIG minors", path=str(self._proc / _MIG_MINORS), error=str(exc)
            )
            return {}

    def _present(self, gpus: list[CdiGpu], minors: dict[str, int]) -> frozenset[str]:
        """The device nodes the spec may name that exist under the dev root."""
        wanted = {f"/dev/nvidia{g.minor}" for g in gpus} | set(CONTROL_NODES)
        wanted |= {f"/dev/nvidia-caps/nvidia-cap{minor}" for minor in minors.values()}
        return frozenset(p for p in wanted if (self._dev / p.lstrip("/")).exists())

    def _write(self, spec: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        text = json.dumps(spec, indent=2, sort_keys=True) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=".migweaver-", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
