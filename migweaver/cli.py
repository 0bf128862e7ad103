"""The `migweaver` command.

Each subcommand parses its arguments, calls one function of the package and prints the
result; exit code 0 on success, 1 when the input was rejected (with every reason printed),
2 on a usage error (argparse).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from migweaver import __version__
from migweaver.core.agent.binding import DEVICE_LIST_STRATEGIES
from migweaver.core.mig import catalog as catalog_mod
from migweaver.core.mig.catalog import GpuModel

if TYPE_CHECKING:
    from migweaver.sim.engine import Progress


def _model_json(model: GpuModel) -> dict[str, Any]:
    return {
        "model": model.key,
        "description": model.description,
        "memoryMiB": model.memory_mib,
        "memorySlots": model.memory_slots,
        "computeSlices": model.compute_slices,
        "pciDeviceIds": [f"0x{d:04X}" for d in model.pci_device_ids],
        "profiles": [
            {
                "name": p.name,
                "profileId": p.profile_id,
                "profileIndex": p.index,
                "computeSlices": p.compute_slices,
                "memorySlices": p.memory_slices,
                "memoryMiB": p.memory_mib,
                "smCount": p.sm_count,
                "maxCount": p.max_count,
                "mediaExtensions": p.media_extensions,
                "placements": [{"start": pl.start, "size": pl.size} for pl in p.placements],
                "aliases": list(p.aliases),
                "confirmed": p.confirmed,
            }
            for p in model.profiles
        ],
    }


def _model_table(model: GpuModel) -> str:
    lines = [
        f"{model.key}  ({model.description}, {model.memory_mib} MiB, "
        f"{model.compute_slices} compute slices on {model.memory_slots} memory slots)",
        f"  {'PROFILE':<12} {'ID':>3} {'IDX':>3} {'MiB':>7} {'SMs':>4} {'MAX':>3}  "
        "PLACEMENTS (start:size)",
    ]
    for p in model.profiles:
        sms = "?" if p.sm_count is None else str(p.sm_count)
        mib = f"{p.memory_mib}{'' if p.confirmed else '*'}"
        places = " ".join(str(pl) for pl in p.placements)
        alias = f"  (also {', '.join(p.aliases)})" if p.aliases else ""
        lines.append(
            f"  {p.name:<12} {p.profile_id:>3} {p.index:>3} {mib:>7} {sms:>4} "
            f"{p.max_count:>3}  {places}{alias}"
        )
    if any(not p.confirmed for p in model.profiles):
        lines.append("  * estimate: the profiles NVML reports on the GPU replace it at run time")
    return "\n".join(lines)


def cmd_catalog(args: argparse.Namespace) -> int:
    if args.model:
        model = catalog_mod.get_model(args.model) or catalog_mod.match_model(args.model)
        if model is None:
            known = ", ".join(catalog_mod.model_keys())
            print(f"error: unknown model {args.model!r}; known: {known}", file=sys.stderr)
            return 1
        models: Sequence[GpuModel] = (model,)
    else:
        models = catalog_mod.CATALOG
    if args.json:
        payload: Any = [_model_json(m) for m in models]
        print(json.dumps(payload[0] if args.model else payload, indent=2))
    else:
        print("\n\n".join(_model_table(m) for m in models))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate a geometry ConfigMap (or a bare config.yaml); `-` reads stdin."""
    from migweaver.core import config as config_mod

    path: str = args.file
    text = _read_text(path, stdin=True)
    if text is None:
        return 1
    result = config_mod.load_device_config(text, "<stdin>" if path == "-" else path)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not result.ok:
        for error in result.errors:
            print(f"error: {error}", file=sys.stderr)
        print(config_mod.summarize(result), file=sys.stderr)
        return 1
    print(config_mod.summarize(result))
    return 0


def cmd_crds(args: argparse.Namespace) -> int:
    """Print the CRDs generated from the models, write one file per CRD, or check a directory."""
    from pathlib import Path

    from migweaver.core.resources import crds as crds_mod

    rendered = crds_mod.render_crds()
    if args.check is not None:
        stale = 0
        for crd in rendered:
            path = Path(args.check) / crds_mod.crd_filename(crd)
            try:
                current: str | None = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                current = None
            if current != crds_mod.crd_to_yaml(crd):
                stale += 1
                state = "is missing" if current is None else "is out of date"
                print(f"{path} {state}; run `make crds`", file=sys.stderr)
        if stale:
            return 1
        print(f"{args.check}: {len(rendered)} CRDs up to date")
        return 0
    if args.output_dir is not None:
        directory = Path(args.output_dir)
        directory.mkdir(parents=True, exist_ok=True)
        for crd in rendered:
            path = directory / crds_mod.crd_filename(crd)
            text = crds_mod.crd_to_yaml(crd)
            # Rewrite only on change, so an up-to-date tree keeps its timestamps.
            if path.exists() and path.read_text(encoding="utf-8") == text:
                print(f"{path} unchanged")
                continue
            path.write_text(text, encoding="utf-8", newline="\n")
            print(f"wrote {path}")
        return 0
    sys.stdout.write(crds_mod.crds_to_yaml(rendered))
    return 0


def _read_text(path: str, *, stdin: bool = False) -> str | None:
    """The file's text (with `stdin`, `-` is standard input), or None after printing why
    it cannot be read."""
    try:
        if stdin and path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"error: cannot read {path}: {reason}", file=sys.stderr)
        return None


def cmd_plan(args: argparse.Namespace) -> int:
    """Plan once from files: CLUSTER.yaml, PODS.yaml and optionally the geometry config."""
    from dataclasses import replace

    from migweaver.core import config as config_mod
    from migweaver.core.planning.cluster_file import InputError, load_cluster, load_pods
    from migweaver.core.planning.plan_report import render_json, render_text
    from migweaver.core.planning.planner import plan
    from migweaver.core.resources.api import parse_timestamp
    from migweaver.core.resources.requests import RequestDefaults

    texts = [_read_text(p) for p in (args.cluster, args.pods, args.config) if p is not None]
    if any(text is None for text in texts):
        return 1
    config = None
    if args.config is not None:
        loaded = config_mod.load_device_config(str(texts[2]), args.config)
        if not loaded.ok:
            for issue in loaded.errors:
                print(f"error: {issue.in_file(args.config)}", file=sys.stderr)
            return 1
        config = loaded.config
    defaults = config.request_defaults() if config else RequestDefaults()
    try:
        snapshot = load_cluster(str(texts[0]), args.cluster)
        pods = load_pods(str(texts[1]), args.pods, defaults)
    except InputError as exc:
        for error in exc.errors:
            print(f"error: {error}", file=sys.stderr)
        return 1
    if not snapshot.now:
        # Without `now:` the plan is made as of the newest pod: no pod counts as starving.
        stamps = [parse_timestamp(d.created) for d in pods.demands]
        finite = [s for s in stamps if s != float("inf")]
        snapshot = replace(snapshot, now=max(finite, default=0.0))
    result_plan = plan(snapshot, pods.demands, config)
    if args.json:
        print(json.dumps(render_json(snapshot, result_plan, pods), indent=2))
    else:
        print(render_text(snapshot, result_plan, pods))
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    """Run the node agent until SIGTERM (docs/agent.md)."""
    import asyncio

    from migweaver import logs
    from migweaver.agent.main import AgentOptions, run_agent

    if not args.node_name:
        print("error: --node-name (or the NODE_NAME variable) is required", file=sys.stderr)
        return 2
    if args.device_split_count < 1:
        print("error: --device-split-count must be at least 1", file=sys.stderr)
        return 2
    if args.resync < 1:
        # It is also the watch timeout: 0 would re-list the API and re-read every GPU
        # in a hot loop.
        print("error: --resync must be at least 1 (seconds)", file=sys.stderr)
        return 2
    logs.configure(args.log_level, args.log_format)
    where = {"plugin_dir": args.device_plugin_dir} if args.device_plugin_dir else {}
    options = AgentOptions(
        **where,
        node_name=args.node_name,
        backend=args.backend,
        fake_gpus=args.fake_gpus,
        fake_mig_enabled=args.fake_mig_enabled,
        fake_state=args.fake_state,
        kubeconfig=args.kubeconfig,
        resync_s=args.resync,
        probe_address=args.probe_address,
        probe_port=args.probe_port,
        metrics_address=args.metrics_address,
        metrics_port=args.metrics_port,
        device_plugin=args.device_plugin,
        cdi_dir=args.cdi,
        device_list_strategy=args.device_list_strategy,
        device_split_count=args.device_split_count,
        hami_core_dir=args.hami_core_dir,
        hami_core_lib=args.hami_core_lib,
    )
    return asyncio.run(run_agent(options))


def cmd_version(_: argparse.Namespace) -> int:
    print(f"migweaver {__version__}")
    return 0


class _HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default in `--help`, unless its help already names it or there
    is none worth showing (a flag that is off, an option without a value)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or default == ""
            or isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction)
            or not action.option_strings
        ):
            return action.help
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="migweaver",
        description="Dynamic MIG for Kubernetes with HAMi's pod API.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"migweaver {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Every subcommand's --help shows the defaults too.
    add_parser = sub.add_parser

    def add_with_defaults(*args: Any, **kwargs: Any) -> argparse.ArgumentParser:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        parser: argparse.ArgumentParser = add_parser(*args, **kwargs)
        return parser

    sub.add_parser = add_with_defaults  # type: ignore[method-assign]

    p = sub.add_parser("version", help="print the version")
    p.set_defaults(func=cmd_version)

    p = sub.add_parser("catalog", help="list GPU models, MIG profiles and placements")
    p.add_argument("--model", help="one model (catalog key or NVML name, e.g. A100-SXM4-80GB)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_catalog)

    p = sub.add_parser(
        "check-config", help="validate the geometry ConfigMap (or a bare config.yaml)"
    )
    p.add_argument("file", metavar="FILE", help="ConfigMap manifest or config.yaml; - for stdin")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser(
        "crds", help="print the MigLayout and NodeConfig CRDs generated from the models"
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--output-dir", metavar="DIR", help="write one YAML file per CRD into DIR")
    where.add_argument(
        "--check", metavar="DIR", help="exit 1 when the CRD files in DIR differ from the models"
    )
    p.set_defaults(func=cmd_crds)

    p = sub.add_parser(
        "plan", help="plan pending pods on a cluster described in files (docs/planner.md)"
    )
    p.add_argument("--cluster", required=True, metavar="CLUSTER.yaml", help="nodes and GPUs")
    p.add_argument("--pods", required=True, metavar="PODS.yaml", help="pod manifests")
    p.add_argument("--config", metavar="CONFIGMAP.yaml", help="geometry ConfigMap or config.yaml")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser(
        "release-gates",
        help="after uninstalling: let every pod that waits for migweaver go to the scheduler",
        description=(
            "Removes the migweaver.io/placement scheduling gate (and an unreleased "
            "reservation) from every pod that carries it, so that no pod waits forever once "
            "migweaver is gone. Run it after `helm uninstall` or `kubectl delete -k "
            "manifests/`; MIG instances and running pods are left alone "
            "(docs/migrating-from-hami.md)."
        ),
    )
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then ~/.kube)")
    p.add_argument("--dry-run", action="store_true", help="list the gated pods, change nothing")
    p.set_defaults(func=cmd_release_gates)

    _add_agent_parser(sub)
    _add_probe_parser(sub)
    _add_simulate_parser(sub)
    _add_operator_parser(sub)
    return parser


def cmd_release_gates(args: argparse.Namespace) -> int:
    """Remove migweaver's scheduling gate from every pod (docs/migrating-from-hami.md)."""
    import asyncio

    from migweaver.k8s.client import ApiError, connect
    from migweaver.operator.release_gates import release_gates

    async def run() -> int:
        try:
            api = await connect(args.kubeconfig)
        except Exception as exc:  # a missing or broken kubeconfig: say so, no traceback
            print(f"error: cannot connect to the cluster: {exc}", file=sys.stderr)
            return 1
        async with api:
            try:
                result = await release_gates(api, dry_run=args.dry_run)
            except ApiError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
        verb = "would release" if args.dry_run else "released"
        for pod in result.released:
            print(f"{verb} {pod}")
        for failure in result.failed:
            print(f"error: {failure}", file=sys.stderr)
        print(f"{verb} {len(result.released)} pods; {len(result.failed)} failed")
        return 1 if result.failed else 0

    return asyncio.run(run())


def _add_agent_parser(sub: Any) -> None:
    # Light module (no gRPC): the parser stays quick for every other subcommand.
    from migweaver.agent.cdi import DEFAULT_CDI_DIR
    from migweaver.agent.deviceplugin.devices import DEFAULT_SPLIT_COUNT

    p = sub.add_parser("agent", help="run the node agent (applies MigLayouts through NVML)")
    p.add_argument(
        "--node-name",
        default=os.environ.get("NODE_NAME", ""),
        help="this node's name (default: $NODE_NAME, set from the pod's spec.nodeName)",
    )
    p.add_argument("--backend", choices=["nvml", "fake"], default="nvml", help="GPU backend")
    p.add_argument(
        "--fake-gpus",
        default="",
        metavar="MODEL:N,...",
        help="GPUs of the fake backend, e.g. A100-SXM4-80GB:2,H100-SXM5-80GB:1",
    )
    p.add_argument(
        "--fake-mig-enabled", action="store_true", help="fake GPUs start with MIG mode on"
    )
    p.add_argument(
        "--fake-state",
        metavar="FILE",
        help="keep the fake GPUs' MIG modes and instances in this JSON file across restarts",
    )
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then ~/.kube)")
    p.add_argument("--resync", type=int, default=30, metavar="SECONDS", help="full re-check period")
    p.add_argument("--probe-address", default="0.0.0.0", help="address of /healthz, /readyz")
    p.add_argument("--probe-port", type=int, default=8081, help="port of /healthz, /readyz")
    p.add_argument(
        "--metrics-address",
        default="0.0.0.0",
        help="address of the agent's /metrics (127.0.0.1: only on the node itself)",
    )
    p.add_argument("--metrics-port", type=int, default=9394, help="port of the agent's /metrics")
    p.add_argument(
        "--no-device-plugin",
        dest="device_plugin",
        action="store_false",
        help="do not serve the kubelet device plugin (another plugin advertises the GPUs)",
    )
    p.add_argument(
        "--device-plugin-dir",
        help="the kubelet's device-plugins directory (default /var/lib/kubelet/device-plugins)",
    )
    p.add_argument(
        "--cdi",
        nargs="?",
        const=DEFAULT_CDI_DIR,
        metavar="DIR",
        help="keep a CDI spec of every GPU and MIG instance in DIR (default "
        f"{DEFAULT_CDI_DIR}): the names --device-list-strategy cdi passes",
    )
    p.add_argument(
        "--device-list-strategy",
        choices=DEVICE_LIST_STRATEGIES,
        default="cdi",
        help="how Allocate passes devices: CDI names nvidia.com/gpu=<UUID> (default), "
        "NVIDIA's volume-mounts, or envvar (NVIDIA_VISIBLE_DEVICES; see docs/security.md)",
    )
    p.add_argument(
        "--device-split-count",
        type=int,
        default=DEFAULT_SPLIT_COUNT,
        help="pods that may share one hami-core GPU (HAMi's deviceSplitCount)",
    )
    p.add_argument(
        "--hami-core-dir",
        metavar="DIR",
        help="host directory (seen at the same path) of HAMi-core's libvgpu.so and "
        "ld.so.preload, mounted into hami-core containers so their limits are enforced",
    )
    p.add_argument(
        "--hami-core-lib",
        metavar="FILE",
        help="a libvgpu.so to install into --hami-core-dir at start (e.g. from the image)",
    )
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    p.add_argument(
        "--log-format",
        choices=("json", "console"),
        default=None,
        help="json (default when stderr is not a terminal, as in a pod) or console",
    )
    p.set_defaults(func=cmd_agent)


def _add_probe_parser(sub: Any) -> None:
    p = sub.add_parser(
        "probe",
        help="print what NVML reports for each GPU beside the catalog (read-only; docs/agent.md)",
    )
    p.add_argument("--backend", choices=["nvml", "fake"], default="nvml", help="GPU backend")
    p.add_argument(
        "--fake-gpus",
        default="",
        metavar="MODEL:N,...",
        help="GPUs of the fake backend, e.g. H200-141GB:1",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--record",
        metavar="FILE",
        help="also save NVML's raw answers to every read-only question as JSON (nvml only)",
    )
    p.set_defaults(func=cmd_probe)


def cmd_probe(args: argparse.Namespace, nvml: Any = None) -> int:
    """Read-only report of the node's GPUs; `nvml` replaces `pynvml` (tests)."""
    from migweaver.agent.backends.protocol import BackendError
    from migweaver.agent.probe import probe_gpus, probe_nvml, render_json, render_text

    try:
        if args.backend == "fake":
            if args.record:
                print("error: --record needs real NVML (--backend nvml)", file=sys.stderr)
                return 2
            from migweaver.agent.backends.fake import FakeBackend

            reports = probe_gpus(FakeBackend.from_spec(args.fake_gpus or "A100-SXM4-80GB:1"))
        else:
            if nvml is None:
                import pynvml

                nvml = pynvml
            if args.record:
                from migweaver.agent.backends.nvml_record import record_nvml

                recording = record_nvml(nvml, source=f"migweaver {__version__} probe --record")
                with open(args.record, "w", encoding="utf-8") as out:
                    json.dump(recording, out, indent=1)
                    out.write("\n")
                print(f"recorded NVML's answers to {args.record}", file=sys.stderr)
            reports = probe_nvml(nvml)
    except (BackendError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(render_json(reports), indent=2))
    else:
        print(render_text(reports), end="")
    return 0


def _add_simulate_parser(sub: Any) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate a fleet over time with the real planner and agent (docs/simulator.md)",
    )
    p.add_argument("scenario", metavar="SCENARIO.yaml", help="nodes, device config and pods")
    p.add_argument(
        "--policy",
        choices=["migweaver", "hami-legacy"],
        default="migweaver",
        help="who places pods: migweaver's planner (default) or HAMi's legacy rules",
    )
    p.add_argument(
        "--compare",
        choices=["migweaver", "hami-legacy"],
        help="run the scenario again under this policy and print both side by side",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--chart", metavar="FILE.png", help="draw slice occupancy per GPU over time")
    p.set_defaults(func=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run a scenario through the planner (or HAMi's legacy rules) and fake GPUs."""
    from migweaver.sim.engine import run_simulation
    from migweaver.sim.policies import policy_named
    from migweaver.sim.report import render_comparison, render_text, report_json
    from migweaver.sim.scenario import ScenarioError, load_scenario

    try:
        loaded = load_scenario(args.scenario)
    except ScenarioError as exc:
        for error in exc.errors:
            print(f"error: {error}", file=sys.stderr)
        return 1
    if args.chart:
        from migweaver.sim.chart import ChartUnavailable, check_available, write_chart

        try:
            check_available()  # before the run, not after it
        except ChartUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    result = run_simulation(loaded, policy_named(args.policy), _progress_line(args.policy))
    other = (
        run_simulation(loaded, policy_named(args.compare), _progress_line(args.compare))
        if args.compare
        else None
    )
    _clear_progress()
    if args.json:
        data = report_json(result)
        if other is not None:
            data["compared"] = report_json(other)
        print(json.dumps(data, indent=2))
    else:
        print(render_text(result))
        if other is not None:
            print()
            print(render_comparison(result, other))
    if args.chart:
        try:
            write_chart(result, args.chart)
        except (ChartUnavailable, OSError) as exc:
            print(f"error: cannot write {args.chart}: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {args.chart}", file=sys.stderr)
    return 0


def _progress_line(policy: str) -> Callable[[Progress], None] | None:
    """A one-line progress display on the terminal (stderr), only when both stdout and
    stderr are terminals: redirected output, pipes and CI logs stay clean. Redrawn at most
    ten times a second; `_clear_progress` wipes it before the report is printed."""
    if not (sys.stdout.isatty() and sys.stderr.isatty()):
        return None
    import time

    from migweaver.sim.report import format_duration

    last = 0.0

    def show(progress: Progress) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last < 0.1:
            return
        last = now
        sys.stderr.write(
            f"\r\033[K{policy}: t={format_duration(progress.now)}  "
            f"arrived {progress.arrived}/{progress.total}  done {progress.done}"
        )
        sys.stderr.flush()

    return show


def _clear_progress() -> None:
    if sys.stdout.isatty() and sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()


# What a shell reports for a command killed by SIGPIPE (128 + 13): `migweaver catalog | head`
# ends like `cat FILE | head` would, quietly.
EXIT_BROKEN_PIPE = 141


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`| head`). Python would flush stdout again at exit and
        # print a second traceback: point stdout at /dev/null first (Python's signal docs).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return result


def _add_operator_parser(sub: Any) -> None:
    from migweaver.operator.settings import default_namespace

    p = sub.add_parser(
        "operator", help="run the operator (plans MigLayouts, releases pods; docs/operator.md)"
    )
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then ~/.kube)")
    p.add_argument(
        "--namespace",
        default=default_namespace(),
        help="namespace of the geometry ConfigMap (default: $POD_NAMESPACE or migweaver-system)",
    )
    p.add_argument(
        "--batch-idle",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="plan when no new gated pod arrived for this long",
    )
    p.add_argument(
        "--batch-max",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="plan at the latest this long after the first pod of a batch arrived",
    )
    p.add_argument("--metrics-address", default="0.0.0.0", help="address of /metrics")
    p.add_argument("--metrics-port", type=int, default=31993, help="port of /metrics")
    p.add_argument("--webhook-address", default="0.0.0.0", help="address of the webhook")
    p.add_argument("--webhook-port", type=int, default=9443, help="port of the webhook")
    p.add_argument(
        "--webhook-tls-dir", metavar="DIR", help="directory with tls.crt and tls.key (a Secret)"
    )
    p.add_argument(
        "--webhook-self-signed",
        action="store_true",
        help="serve the webhook with a self-signed certificate (development)",
    )
    p.add_argument("--no-webhook", action="store_true", help="do not serve the webhook")
    p.add_argument("--probe-address", default="0.0.0.0", help="address of /healthz, /readyz")
    p.add_argument("--probe-port", type=int, default=8080, help="port of /healthz, /readyz")
    p.add_argument(
        "--lease",
        default="migweaver-operator",
        help="name of the Lease (in --namespace) the replicas elect the leader in",
    )
    p.add_argument(
        "--lease-duration",
        type=int,
        default=15,
        metavar="SECONDS",
        help="a killed leader is replaced after this long",
    )
    p.add_argument(
        "--node-vanished-grace",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="evict a pod released to a deleted Node (or report a bare one) after this long",
    )
    p.add_argument(
        "--standalone", action="store_true", help="run without leader election (one replica)"
    )
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    p.add_argument(
        "--log-format",
        choices=("json", "console"),
        default=None,
        help="json (default when stderr is not a terminal, as in a pod) or console",
    )
    p.set_defaults(func=cmd_operator)


def cmd_operator(args: argparse.Namespace) -> int:
    """Run the operator until SIGTERM (docs/operator.md)."""
    import asyncio

    from migweaver import logs
    from migweaver.operator.main import run_operator
    from migweaver.operator.settings import OperatorOptions

    if args.batch_idle <= 0 or args.batch_max < args.batch_idle:
        print("error: need 0 < --batch-idle <= --batch-max", file=sys.stderr)
        return 2
    if args.lease_duration < 3:
        print("error: --lease-duration must be >= 3 (seconds)", file=sys.stderr)
        return 2
    if args.node_vanished_grace < 0:
        print("error: --node-vanished-grace must be >= 0 (seconds)", file=sys.stderr)
        return 2
    webhook = not args.no_webhook
    if webhook and not args.webhook_tls_dir and not args.webhook_self_signed:
        print(
            "error: the webhook needs --webhook-tls-dir or --webhook-self-signed (or --no-webhook)",
            file=sys.stderr,
        )
        return 2
    logs.configure(args.log_level, args.log_format)
    options = OperatorOptions(
        kubeconfig=args.kubeconfig,
        namespace=args.namespace,
        batch_idle=args.batch_idle,
        batch_max=args.batch_max,
        metrics_address=args.metrics_address,
        metrics_port=args.metrics_port,
        webhook=webhook,
        webhook_address=args.webhook_address,
        webhook_port=args.webhook_port,
        webhook_tls_dir=args.webhook_tls_dir,
        webhook_self_signed=args.webhook_self_signed,
        probe_address=args.probe_address,
        probe_port=args.probe_port,
        lease=args.lease,
        lease_duration_s=args.lease_duration,
        lease_renew_s=min(2.0, args.lease_duration / 5),
        node_vanished_grace_s=args.node_vanished_grace,
        standalone=args.standalone,
    )
    return asyncio.run(run_operator(options))
