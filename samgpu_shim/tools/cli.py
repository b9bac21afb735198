"""samgpu-shim: the command line.

Commands: bench (upstream against the shim, interleaved), soak (memory over
many calls), audit (code that still needs numpy; --fix pins it), kpi (a
report of KPI files), doctor (settings, patch state, versions). Every mistake in the arguments is a
one-line error and exit status 2, before any work starts.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from typing import List, Optional


class CliError(Exception):
    """A bad argument or a missing requirement: one line, exit status 2."""


def _save_json(report: dict, path: Optional[str]) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
        print(f"saved {path}")


def _writable(option: str, path: Optional[str]) -> None:
    if not path:
        return
    if os.path.isdir(path):
        raise CliError(f"{option} {path}: is a folder, give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CliError(f"{option} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise CliError(f"{option} {path}: not writable")


def _image_size(text: str) -> tuple:
    parts = text.lower().split("x")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise CliError(f"--image {text!r}: expected HEIGHTxWIDTH, e.g. 1080x1920") from None
    if h < 1 or w < 1 or h > 16384 or w > 16384:
        raise CliError(f"--image {text!r}: each side must be between 1 and 16384 pixels")
    return h, w


def _device(name: str) -> None:
    import torch

    try:
        device = torch.device("cuda" if name == "auto" and torch.cuda.is_available() else
                              ("cpu" if name == "auto" else name))
    except RuntimeError:
        raise CliError(f"--device {name}: not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CliError(f"--device {name}: no CUDA device is available here (use --device cpu or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CliError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu" and name != "auto":
        raise CliError(f"--device {name}: only cpu, cuda and cuda:N are supported")


def _check_common(args: argparse.Namespace) -> None:
    if args.calls is not None and args.calls < 1:
        raise CliError(f"--calls {args.calls}: must be at least 1")
    _image_size(args.image)
    _writable("--json", args.json)
    _device(args.device)


def _check_bench(args: argparse.Namespace) -> None:
    from samgpu_shim.tools.bench import BENCH_FAMILIES

    _check_common(args)
    if args.warmup < 0:
        raise CliError(f"--warmup {args.warmup}: must be 0 or more")
    if args.compile and args.family != "sam" and not args.frames:
        raise CliError("--compile builds the reference for segment-anything's prompt-to-mask work; drop --family")
    package, extra, names = BENCH_FAMILIES[args.family]
    if importlib.util.find_spec(package) is None:
        raise CliError(f"--family {args.family}: {package} is not installed (pip install 'samgpu-shim[{extra}]')")
    unknown = [m for m in args.model if m not in names]
    if unknown:
        raise CliError(f"--family {args.family} has no model {', '.join(unknown)}; choose from {', '.join(names)}")
    if args.plot:
        if importlib.util.find_spec("matplotlib") is None:
            raise CliError("--plot needs matplotlib: pip install 'samgpu-shim[plot]'")
        _writable("--plot", args.plot)


def _bench(args: argparse.Namespace) -> int:
    _check_bench(args)
    from samgpu_shim.tools import bench as _bench

    if args.frames:
        from samgpu_shim.tools import frames as runner
    else:
        runner = _bench  # type: ignore[assignment]
    report = runner.run(args)
    print(runner.format_table(report))
    _save_json(report, args.json)
    if args.plot:
        _bench.plot(report, args.plot)
        print(f"saved {args.plot}")
    return 0


def _soak(args: argparse.Namespace) -> int:
    _check_common(args)
    from samgpu_shim.tools import soak as _soak

    report = _soak.run(args)
    print(_soak.format_table(report))
    _save_json(report, args.json)
    return 0


def _kpi(args: argparse.Namespace) -> int:
    from samgpu_shim.tools import kpi

    if args.plot:
        if importlib.util.find_spec("matplotlib") is None:
            raise CliError("--plot needs matplotlib: pip install 'samgpu-shim[plot]'")
        _writable("--plot", args.plot)
    try:
        return kpi.main(args.files, args.since, args.until, args.json, args.plot)
    except kpi.KpiError as exc:
        raise CliError(str(exc)) from None


def _version() -> str:
    import samgpu_shim

    return f"samgpu-shim {samgpu_shim.__version__}"


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(
        prog="samgpu-shim",
        description="GPU-resident Segment Anything predict: benchmark it (bench, soak), migrate code to it "
        "(audit, audit --fix), report on its KPI files (kpi) and check an install (doctor).",
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="{bench,soak,audit,kpi,doctor}")
    bench = sub.add_parser("bench", help="upstream predict against the shim, interleaved", formatter_class=fmt)
    bench.add_argument(
        "--family",
        default="sam",
        choices=["sam", "sam2", "sam3", "hq", "mobile", "efficientvit"],
        help="sam: segment-anything's SamPredictor; sam2: SAM 2's SAM2ImagePredictor; sam3: SAM 3's "
        "SAM3InteractiveImagePredictor; hq: SAM-HQ; mobile: MobileSAM; efficientvit: EfficientViT-SAM",
    )
    bench.add_argument(
        "--model",
        nargs="+",
        default=["tiny"],
        metavar="MODEL",
        help="architectures, random weights (tiny runs on a CPU in seconds); "
        "sam: tiny vit_b vit_l vit_h; sam2: tiny hiera_t hiera_s hiera_b+ hiera_l; sam3: tiny full; "
        "hq: vit_b vit_l vit_h; mobile: vit_t; efficientvit: l0 l1 l2 xl0 xl1",
    )
    bench.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1, ...")
    bench.add_argument("--image", default="1080x1920", help="frame size HEIGHTxWIDTH")
    bench.add_argument(
        "--calls", type=int, default=None, help="timed calls per path (None: 300 on CUDA, 50 on a CPU)"
    )
    bench.add_argument("--warmup", type=int, default=10, help="untimed calls per path first")
    bench.add_argument("--no-pipeline", action="store_true", help="skip the frame-pipeline comparison")
    bench.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="also time graph mode and its device floor (CUDA only; capture time reported)",
    )
    bench.add_argument(
        "--compile",
        action="store_true",
        help="also time torch.compile(mode='reduce-overhead') of the same work, a reference row "
        "(--family sam, CUDA only; compile time reported); with --frames, the fast-compile encoder path",
    )
    bench.add_argument(
        "--frames",
        action="store_true",
        help="time the whole single-prompt frame loop (set_image included) instead of predict, for the "
        "encoder precisions and the fast encoder",
    )
    bench.add_argument("--kpi", action="store_true", help="also time the shim with a KPI handler formatting each event")
    bench.add_argument(
        "--metrics",
        action="store_true",
        help="also time the shim with the metrics backends on (those installed: otel, prometheus)",
    )
    bench.add_argument("--json", metavar="PATH", help="save every number (and the samples) as JSON; no progress bar")
    bench.add_argument("--plot", metavar="PATH", help="save a PNG of the latency distributions (needs matplotlib)")
    soak = sub.add_parser("soak", help="many calls in a row, memory sampled as they go", formatter_class=fmt)
    soak.add_argument("--model", default="tiny", choices=["tiny", "vit_b", "vit_l", "vit_h"], help="architecture")
    soak.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1, ...")
    soak.add_argument("--image", default="1080x1920", help="frame size HEIGHTxWIDTH")
    soak.add_argument("--calls", type=int, default=1000, help="iterations (two predict calls each)")
    soak.add_argument("--cuda-graphs", action="store_true", help="run in graph mode")
    soak.add_argument("--json", metavar="PATH", help="save the memory samples as JSON")
    audit = sub.add_parser(
        "audit", help="find code that still needs numpy results from predict", formatter_class=fmt
    )
    audit.add_argument("paths", nargs="+", help=".py files, .ipynb notebooks or folders, audited as one project")
    audit.add_argument("--json", action="store_true", help="print the findings as JSON")
    audit.add_argument(
        "--fix",
        action="store_true",
        help="add as_numpy=True to every predict call whose results reach numpy code and whose receiver is "
        "known to be a patched predictor; list the others as hand fixes; then audit again",
    )
    audit.add_argument("--diff", action="store_true", help="print the change --fix would make; write nothing")
    kpi = sub.add_parser("kpi", help="a report of KPI JSON-lines files (SAMGPU_KPI_FILE)", formatter_class=fmt)
    kpi.add_argument("files", nargs="+", metavar="FILE", help="KPI files, plain or .gz; rotated logs in any order")
    kpi.add_argument("--since", help="only events at or after this time (epoch seconds or ISO 8601, UTC if naive)")
    kpi.add_argument("--until", help="only events at or before this time (same formats)")
    kpi.add_argument("--json", action="store_true", help="print the report as JSON")
    kpi.add_argument("--plot", metavar="PATH", help="save a PNG: GPU share over time, latency by mode")
    sub.add_parser("doctor", help="settings in force, patch state and versions", formatter_class=fmt)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "doctor":
            from samgpu_shim.tools import doctor

            return doctor.main()
        if args.command == "soak":
            return _soak(args)
        if args.command == "kpi":
            return _kpi(args)
        if args.command == "audit":
            from samgpu_shim import migrate as _audit

            return _audit.main(args.paths, as_json=args.json, fix=args.fix, diff=args.diff)
        return _bench(args)
    except CliError as exc:
        print(f"samgpu-shim {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"samgpu-shim {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
