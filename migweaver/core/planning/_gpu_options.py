"""What one GPU can offer one device request, memoised per GPU *state*.

A GPU's planning state is split in two:

- `GpuType`: what never changes during a plan (profile table, configured geometries,
  NVML name, mode, policy, hami-core capacity). Thousands of identical GPUs share one.
- `View`: a small hashable tuple of the type id and what is on the GPU now (busy and
  idle instances as `(start, size, profile index)`, hami-core usage, MIG mode, whether a
  starving pod holds it). Identical GPUs in identical states have equal views.

`GpuOptions` interns views to integers and memoises every question by view id, so the
planner asks "what is the best device for this request on a GPU in this state" once per
distinct state, not once per GPU. That is what makes 8,000 GPUs cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from migweaver.core.config import Geometry
from migweaver.core.mig.geometry import PlacedInstance, fit_profiles
from migweaver.core.mig.profiles import MigProfile, Placement, ProfileTable
from migweaver.core.planning._placement_score import ProfileGeometry, profile_size_key

__all__ = [
    "KIND_EXISTING",
    "KIND_NEW",
    "KIND_SHARE",
    "RANK_LENGTH",
    "DeviceReq",
    "NewInstance",
    "GpuOptions",
    "GpuType",
    "Inst",
    "inst_mask",
    "Option",
    "View",
    "profile_serves",
    "resolve_geometries",
]

KIND_EXISTING = 0
"""A free instance that exists (or is already planned): ready without reconfiguration."""
KIND_SHARE = 1
"""A hami-core share of a whole GPU: ready without reconfiguration."""
KIND_NEW = 2
"""A new MIG instance: needs the agent to reconfigure the GPU first."""

Inst = tuple[int, int, int]
"""An instance as (start, size, profile index in the GPU's table; -1 if unknown)."""


class DeviceReq(NamedTuple):
    """What one device must offer: MiB (or percent of the GPU's memory) and compute."""

    memory_mib: int
    """0 when the request is a percentage."""
    memory_percentage: int
    cores: int

    def describe(self) -> str:
        """`8000 MiB`, `50 % of a GPU's memory`, with `and 30 % compute` when asked."""
        memory = (
            f"{self.memory_mib} MiB"
            if self.memory_mib
            else f"{self.memory_percentage} % of a GPU's memory"
        )
        return f"{memory} and {self.cores} % compute" if self.cores else memory


class View(NamedTuple):
    """The planning state of one GPU; equal views behave identically."""

    tid: int
    mig_enabled: bool
    busy: tuple[Inst, ...]
    idle: tuple[Inst, ...]
    share_mem: int
    share_cores: int
    share_count: int
    share_exclusive: bool
    held: bool


class NewInstance(NamedTuple):
    """The best new instance for a request on one GPU, and what it costs."""

    destroyed_count: int
    geometry: int
    loss: int
    inst: Inst
    destroyed: tuple[Inst, ...]


class Option(NamedTuple):
    """One way to serve a device on one GPU.

    `rank` orders options across GPUs (smaller first): kind, idle instances destroyed,
    MIG switch needed, size (MiB, memory slices, compute slices), packing preference,
    fragmentation loss, reconfiguration work.
    """

    rank: tuple[float, ...]
    kind: int
    inst: Inst | None
    destroyed: tuple[Inst, ...]
    share_mem: int
    share_cores: int


@dataclass(eq=False, slots=True)
class GpuType:
    """The unchanging part of a GPU's planning state."""

    tid: int
    table: ProfileTable
    shape: ProfileGeometry
    name: str
    mode: str
    static: bool
    memory_mib: int
    geometries: tuple[tuple[int, ...], ...] | None
    """Per configured geometry, the count of each profile index; None = any layout."""
    geometry_text: tuple[str, ...]
    hami_memory: int
    hami_cores: int
    split: int
    compute: int = field(init=False)
    name_upper: str = field(init=False)
    by_size: tuple[int, ...] = field(init=False)
    """Profile indices that may be created (no +me; in some geometry), smallest first."""

    def __post_init__(self) -> None:
        profiles = self.table.profiles
        self.compute = max((p.compute_slices for p in profiles), default=0)
        self.name_upper = self.name.upper()
        allowed = [
            i
            for i, p in enumerate(profiles)
            if not p.media_extensions
            and (self.geometries is None or any(g[i] for g in self.geometries))
        ]
        self.by_size = tuple(sorted(allowed, key=lambda i: profile_size_key(profiles[i])))

    def serves(self, pidx: int, req: DeviceReq) -> bool:
        """Whether an instance of profile `pidx` gives the device at least what it asks
        (`profile_serves`)."""
        if pidx < 0:
            return False
        return profile_serves(self.table, self.table.profiles[pidx], req)

    def instance_cores(self, pidx: int) -> int:
        """Percent of the GPU's compute an instance of `pidx` has (rounded down)."""
        if pidx < 0 or not self.compute:
            return 0
        return self.table.profiles[pidx].compute_slices * 100 // self.compute

    def share_memory(self, req: DeviceReq) -> int:
        """MiB of a hami-core share for `req` (a percentage of the scaled memory)."""
        return req.memory_mib or self.hami_memory * req.memory_percentage // 100

    def placed(self, inst: Inst, names: dict[Inst, str] | None = None) -> PlacedInstance:
        """The instance as a layout entry, with its snapshot name when it has one."""
        name = (names or {}).get(inst) or self.table.profiles[inst[2]].name
        return PlacedInstance(name, Placement(inst[0], inst[1]))


def profile_serves(table: ProfileTable, profile: MigProfile, req: DeviceReq) -> bool:
    """Whether an instance of `profile` (of a GPU with `table`) gives a device at least
    what `req` asks.

    Memory in MiB compares with NVML's physical size. A percentage compares with the
    profile's share of the memory slices: NVML splits memory into equal slices, and the
    per-instance MiB differ a little by overhead, so "50 %" must still mean the half-GPU
    profile. Cores are a floor on the share of compute slices.
    """
    if req.memory_mib:
        if profile.memory_mib < req.memory_mib:
            return False
    elif profile.memory_slices * 100 < req.memory_percentage * table.memory_slots:
        return False
    compute = max(p.compute_slices for p in table.profiles)
    return profile.compute_slices * 100 >= req.cores * compute


RANK_LENGTH = 8
"""Number of terms in an option's rank (`_rank`)."""


def _rank(
    kind: int,
    destroyed: int,
    switch: int,
    loss: int,
    fraction: float,
    mib: int,
    pack: float,
    work: int = 0,
) -> tuple[float, ...]:
    """How good an option is, smaller first, comparable across GPUs and nodes.

    1. an existing free instance before anything that must be created or shared (it is
       ready now and would otherwise sit idle); a share and a new instance rank alike;
       but an idle instance larger than what its GPU could give the device is not
       offered when nothing runs on that GPU (`GpuOptions._best`: the GPU is
       re-partitioned like an empty one instead);
    2. fewer idle instances destroyed (on a GPU where nothing runs, none count);
    3. no MIG mode switch;
    4. the smaller share of a GPU (memory slices + compute slices, as fractions; a
       hami-core share: memory + cores): across models this is what "smallest profile"
       means, so a 40 GB pod takes 3 slices of an H100 rather than a whole A100-40GB;
    5. fewer MiB (the tighter fit among equal shares);
    6. the fuller GPU (binpack: empty GPUs stay whole; `spread` turns it around);
    7. the least capacity lost to fragmentation;
    8. the least reconfiguration `work` (0 for an existing instance or a share, 1 plus the
       idle instances destroyed for a new instance): between re-partitioning a GPU whose
       idle instances nobody uses and an equal new instance on an empty GPU, the empty
       GPU, so the idle instances stay for a pod that wants them.
    """
    return (min(kind, KIND_SHARE), destroyed, switch, fraction, mib, pack, loss, work)


def inst_mask(inst: Inst) -> int:
    """The memory slots an instance occupies, as a bit mask (bit i = slot i)."""
    return ((1 << inst[1]) - 1) << inst[0]


def resolve_geometries(
    table: ProfileTable, geometries: Sequence[Geometry] | None
) -> tuple[tuple[tuple[int, ...], ...] | None, tuple[str, ...]]:
    """Configured geometries as count vectors over the table's profile indices.

    A geometry naming a profile this GPU does not have is dropped (`check-config` already
    warned about it); if every geometry is dropped the GPU gets no new instances.
    """
    if geometries is None:
        return None, ()
    index = {p.name: i for i, p in enumerate(table.profiles)}
    vectors: list[tuple[int, ...]] = []
    texts: list[str] = []
    for geometry in geometries:
        counts = [0] * len(table.profiles)
        ok = True
        for name, count in geometry.profiles:
            profile = table.get(name)
            if profile is None:
                ok = False
                break
            counts[index[profile.name]] += count
        if ok:
            vectors.append(tuple(counts))
            texts.append(str(geometry))
    return tuple(vectors), tuple(texts)


class GpuOptions:
    """Interned views and memoised answers about them (one instance per plan)."""

    def __init__(self) -> None:
        self.types: list[GpuType] = []
        self.views: list[View] = []
        self._ids: dict[View, int] = {}
        self._serving: dict[tuple[int, DeviceReq], tuple[tuple[int, ...], frozenset[int]]] = {}
        self._options: dict[tuple[int, DeviceReq, bool, bool, bool], Option | None] = {}
        self._new: dict[tuple[int, tuple[int, ...]], NewInstance | None] = {}
        self._fits: dict[tuple[int, int, tuple[Inst, ...]], bool] = {}
        self._fullness: dict[int, float] = {}

    # ------------------------------------------------------------------ views

    def intern(self, view: View) -> int:
        """The id of `view` (equal views share one id)."""
        vid = self._ids.get(view)
        if vid is None:
            vid = len(self.views)
            self._ids[view] = vid
            self.views.append(view)
        return vid

    def type_of(self, vid: int) -> GpuType:
        return self.types[self.views[vid].tid]

    def fullness(self, vid: int) -> float:
        """How much of the GPU is taken, 0..1 (busy memory slots, or hami-core memory)."""
        cached = self._fullness.get(vid)
        if cached is not None:
            return cached
        view = self.views[vid]
        t = self.types[view.tid]
        if t.mode == "hami-core" and not view.mig_enabled:
            value = view.share_mem / t.hami_memory if t.hami_memory else 1.0
        else:
            slots = t.table.memory_slots or 1
            value = sum(i[1] for i in view.busy) / slots
        self._fullness[vid] = value
        return value

    def apply(self, vid: int, option: Option) -> int:
        """The view after taking `option`."""
        v = self.views[vid]
        if option.kind == KIND_SHARE:
            view = v._replace(
                share_mem=v.share_mem + option.share_mem,
                share_cores=v.share_cores + option.share_cores,
                share_count=v.share_count + 1,
                share_exclusive=v.share_exclusive or option.share_cores >= 100,
            )
        else:
            assert option.inst is not None
            gone = set(option.destroyed) | {option.inst}
            view = v._replace(
                mig_enabled=True,
                busy=tuple(sorted((*v.busy, option.inst))),
                idle=tuple(i for i in v.idle if i not in gone),
            )
        return self.intern(view)

    def hold(self, vid: int) -> int:
        """The view of the same GPU held by a starving pod."""
        return self.intern(self.views[vid]._replace(held=True))

    # ------------------------------------------------------------------ questions

    def serving(self, tid: int, req: DeviceReq) -> tuple[tuple[int, ...], frozenset[int]]:
        """(profiles a new instance for `req` may use, smallest first; every profile
        whose existing instances serve `req`)."""
        key = (tid, req)
        cached = self._serving.get(key)
        if cached is None:
            t = self.types[tid]
            new = tuple(i for i in t.by_size if t.serves(i, req))
            any_ = frozenset(i for i in range(len(t.table.profiles)) if t.serves(i, req))
            cached = self._serving[key] = (new, any_)
        return cached

    def best(
        self, vid: int, req: DeviceReq, allow_mig: bool, allow_hami: bool, spread: bool
    ) -> Option | None:
        """The best way to serve one device of `req` on a GPU in state `vid`, or None."""
        key = (vid, req, allow_mig, allow_hami, spread)
        if key in self._options:
            return self._options[key]
        result = self._best(vid, req, allow_mig, allow_hami, spread)
        self._options[key] = result
        return result

    def _best(
        self, vid: int, req: DeviceReq, allow_mig: bool, allow_hami: bool, spread: bool
    ) -> Option | None:
        view = self.views[vid]
        if view.held:
            return None
        t = self.types[view.tid]
        pack = self.fullness(vid) if spread else -self.fullness(vid)
        if t.mode == "hami-core":
            return self._share(t, view, req, pack) if allow_hami else None
        if not allow_mig:
            return None
        new_profiles, any_profiles = self.serving(view.tid, req)
        used = 0
        for inst in view.busy:
            used |= inst_mask(inst)
        best: Option | None = None
        # Nothing runs on the GPU and its layout may change: its idle instances are worth
        # keeping only at their size, never as an oversized device (below).
        unused = view.mig_enabled and not view.busy and not t.static
        if view.mig_enabled:
            for inst in view.idle:
                if inst[2] not in any_profiles:
                    continue
                p = t.table.profiles[inst[2]]
                loss = t.shape.fragmentation_loss(used, inst_mask(inst))
                rank = _rank(KIND_EXISTING, 0, 0, loss, self._fraction(t, p), p.memory_mib, pack)
                if best is None or (rank, inst) < (best.rank, best.inst):
                    best = Option(rank, KIND_EXISTING, inst, (), 0, 0)
        if (best is not None and not unused) or not new_profiles:
            return best
        found = self.new_instance(vid, new_profiles)
        if found is None:
            return best
        p = t.table.profiles[found.inst[2]]
        if best is not None:
            assert best.inst is not None
            have = t.table.profiles[best.inst[2]]
            if profile_size_key(have) <= profile_size_key(p):
                return best
        # Either no idle instance serves, or the smallest that does is larger than the
        # profile a new instance would have. On a GPU where nothing runs, reusing it would
        # hand the pod more than it asked for (a 7g.80gb kept from a whole-GPU job for a
        # half-GPU notebook) and keep the GPU in that shape for as long as such pods come:
        # it is re-partitioned like an empty GPU instead, its idle instances counted as
        # nothing lost (nothing uses them), so across GPUs it ranks as an empty GPU would.
        switch = 0 if view.mig_enabled else 1
        fraction = self._fraction(t, p)
        destroyed = 0 if unused else found.destroyed_count
        rank = _rank(
            KIND_NEW,
            destroyed,
            switch,
            found.loss,
            fraction,
            p.memory_mib,
            pack,
            work=1 + found.destroyed_count,
        )
        return Option(rank, KIND_NEW, found.inst, found.destroyed, 0, 0)

    @staticmethod
    def _fraction(t: GpuType, p: MigProfile) -> float:
        """The share of the GPU an instance takes: memory plus compute (0..2)."""
        slots = t.table.memory_slots or 1
        return p.memory_slices / slots + p.compute_slices / (t.compute or 1)

    def _share(self, t: GpuType, view: View, req: DeviceReq, pack: float) -> Option | None:
        """A hami-core share: memory, cores and the split count must all have room.

        As in HAMi, a request of 100 % cores takes the GPU exclusively (no other share
        may exist), and a GPU whose cores are all taken accepts no further share.
        """
        if view.mig_enabled or t.hami_memory <= 0:
            return None
        memory = t.share_memory(req)
        if view.share_count >= t.split or view.share_exclusive:
            return None
        if view.share_mem + memory > t.hami_memory:
            return None
        if view.share_cores + req.cores > t.hami_cores or view.share_cores >= t.hami_cores:
            return None
        if req.cores >= 100 and view.share_count:
            return None
        fraction = memory / t.hami_memory + req.cores / 100
        rank = _rank(KIND_SHARE, 0, 0, 0, fraction, memory, pack)
        return Option(rank, KIND_SHARE, None, (), memory, req.cores)

    # ------------------------------------------------------------------ new instances

    def new_instance(self, vid: int, profiles: tuple[int, ...]) -> NewInstance | None:
        """The best new instance of one of `profiles` on a GPU in state `vid`, or None.

        Preferred, in order: fewest idle instances destroyed; (with configured geometries)
        the first geometry in config order; the smallest profile; the least fragmentation;
        the lowest start.
        """
        key = (vid, profiles)
        if key in self._new:
            return self._new[key]
        view = self.views[vid]
        t = self.types[view.tid]
        result = None
        if (
            t.mode == "mig"
            and not t.static
            and not view.share_count
            and all(i[2] >= 0 for i in (*view.busy, *view.idle))
        ):
            result = self._new_instance(t, view, profiles)
        self._new[key] = result
        return result

    def _new_instance(
        self, t: GpuType, view: View, profiles: tuple[int, ...]
    ) -> NewInstance | None:
        used = 0
        for inst in view.busy:
            used |= inst_mask(inst)
        busy_counts = _counts(view.busy, len(t.table.profiles))
        best: NewInstance | None = None
        best_rank: tuple[int, ...] = ()
        geometries: Sequence[tuple[int, ...] | None] = (
            [None] if t.geometries is None else t.geometries
        )
        for gi, geometry in enumerate(geometries):
            if best is not None and best.destroyed_count == 0:
                break  # a later geometry cannot beat "destroys nothing" in this one
            if geometry is not None and not self._geometry_open(view, gi, busy_counts):
                continue
            for pidx in profiles:
                if geometry is not None and geometry[pidx] <= busy_counts[pidx]:
                    continue
                size_key = profile_size_key(t.table.profiles[pidx])
                for start, size, mask in t.shape.masks[pidx]:
                    if mask & used:
                        continue
                    inst = (start, size, pidx)
                    destroyed = self._to_destroy(t, view, gi if geometry else None, inst, mask)
                    if destroyed is None:
                        continue
                    loss = t.shape.fragmentation_loss(used, mask)
                    rank = (len(destroyed), gi, *size_key, loss, start)
                    if best is None or rank < best_rank:
                        best, best_rank = (
                            NewInstance(len(destroyed), gi, loss, inst, destroyed),
                            rank,
                        )
        return best

    def _geometry_open(self, view: View, gi: int, busy_counts: list[int]) -> bool:
        """Whether the busy instances, where they are, are part of geometry `gi`."""
        t = self.types[view.tid]
        assert t.geometries is not None
        geometry = t.geometries[gi]
        if any(b > g for b, g in zip(busy_counts, geometry, strict=True)):
            return False
        return self.fits_rest(view.tid, gi, view.busy)

    def _to_destroy(
        self, t: GpuType, view: View, gi: int | None, inst: Inst, mask: int
    ) -> tuple[Inst, ...] | None:
        """Idle instances that must go for `inst`, or None when it cannot be created.

        Without geometries: those overlapping it (and the count limit must hold). With a
        geometry: those overlapping it; and if the geometry's rest then does not fit,
        every idle instance (busy ones never move).
        """
        destroyed = tuple(i for i in view.idle if inst_mask(i) & mask)
        kept = tuple(i for i in view.idle if not inst_mask(i) & mask)
        if gi is None:
            same = sum(1 for i in (*view.busy, *kept) if i[2] == inst[2])
            return destroyed if same < t.table.profiles[inst[2]].max_count else None
        if self.fits_rest(view.tid, gi, tuple(sorted((*view.busy, *kept, inst)))):
            return destroyed
        if kept and self.fits_rest(view.tid, gi, tuple(sorted((*view.busy, inst)))):
            return view.idle
        return None

    def fits_rest(self, tid: int, gi: int, insts: tuple[Inst, ...]) -> bool:
        """Whether `insts` (sorted) is part of geometry `gi` and the rest still fits."""
        key = (tid, gi, insts)
        cached = self._fits.get(key)
        if cached is not None:
            return cached
        t = self.types[tid]
        assert t.geometries is not None
        geometry = t.geometries[gi]
        counts = _counts(insts, len(geometry))
        ok = all(c <= g for c, g in zip(counts, geometry, strict=True))
        if ok:
            profiles = t.table.profiles
            rest = {
                profiles[i].name: g - c
                for i, (c, g) in enumerate(zip(counts, geometry, strict=True))
                if g > c
            }
            fixed = [PlacedInstance(profiles[i[2]].name, Placement(i[0], i[1])) for i in insts]
            ok = fit_profiles(t.table, rest, fixed) is not None
        self._fits[key] = ok
        return ok

    def can_create(self, vid: int, pidx: int) -> bool:
        """Whether one instance of profile `pidx` could be created now (idle ones may go)."""
        return self.new_instance(vid, (pidx,)) is not None


def _counts(insts: Sequence[Inst], n: int) -> list[int]:
    counts = [0] * n
    for inst in insts:
        counts[inst[2]] += 1
    return counts
