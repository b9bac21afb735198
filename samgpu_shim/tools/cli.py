"""Command line: ``samgpu-shim bench`` and ``samgpu-shim doctor``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional


def _save_json(report: dict, path: Optional[str]) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
        print(f"saved {path}")


def _bench(args: argparse.Namespace) -> int:
    from samgpu_shim.tools import bench as _bench

    if args.frames:
        if args.family != "sam":
            print("--frames times segment-anything's SamPredictor only; drop --family", file=sys.stderr)
            return 2
        from samgpu_shim.tools import frames as runner
    else:
        runner = _bench  # type: ignore[assignment]
    report = runner.run(args)
    print(runner.format_table(report))
    _save_json(report, args.json)
    if args.plot:
        try:
            _bench.plot(report, args.plot)
            print(f"saved {args.plot}")
        except ImportError:
            print("--plot needs matplotlib: pip install 'samgpu-shim[plot]'", file=sys.stderr)
            return 2
    return 0


def _soak(args: argparse.Namespace) -> int:
    from samgpu_shim.tools import soak as _soak

    report = _soak.run(args)
    print(_soak.format_table(report))
    _save_json(report, args.json)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="samgpu-shim", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="upstream predict against the shim, interleaved")
    bench.add_argument(
        "--family",
        default="sam",
        choices=["sam", "sam2"],
        help="sam: segment-anything's SamPredictor (default); sam2: SAM 2's SAM2ImagePredictor",
    )
    bench.add_argument(
        "--model",
        nargs="+",
        default=["tiny"],
        metavar="MODEL",
        help="architectures, random weights (default: tiny, which runs on a CPU in seconds); "
        "sam: tiny vit_b vit_l vit_h; sam2: tiny hiera_t hiera_s hiera_b+ hiera_l",
    )
    bench.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1, ...")
    bench.add_argument("--image", default="1080x1920", help="frame size HxW (default 1080x1920)")
    bench.add_argument("--calls", type=int, default=None, help="timed calls per path (default 300 on CUDA, 50 on CPU)")
    bench.add_argument("--warmup", type=int, default=10, help="untimed calls per path first")
    bench.add_argument("--no-pipeline", action="store_true", help="skip the frame-pipeline comparison")
    bench.add_argument(
        "--cuda-graphs", action="store_true", help="also time graph mode (CUDA only; capture time reported)"
    )
    bench.add_argument(
        "--frames", action="store_true", help="time the whole frame loop (set_image included) instead of predict"
    )
    bench.add_argument("--kpi", action="store_true", help="also time the shim with a KPI handler formatting each event")
    bench.add_argument("--json", metavar="PATH", help="save every number (and the samples) as JSON")
    bench.add_argument("--plot", metavar="PATH", help="save a PNG of the latency distributions (needs matplotlib)")
    soak = sub.add_parser("soak", help="many calls in a row, memory sampled as they go")
    soak.add_argument("--model", default="tiny", choices=["tiny", "vit_b", "vit_l", "vit_h"])
    soak.add_argument("--device", default="auto")
    soak.add_argument("--image", default="1080x1920")
    soak.add_argument("--calls", type=int, default=1000, help="iterations (two predict calls each)")
    soak.add_argument("--cuda-graphs", action="store_true", help="run in graph mode")
    soak.add_argument("--json", metavar="PATH")
    audit = sub.add_parser("audit", help="find code that still needs numpy results from predict")
    audit.add_argument("paths", nargs="+", help=".py files, .ipynb notebooks or folders")
    audit.add_argument("--json", action="store_true", help="print the findings as JSON")
    audit.add_argument(
        "--fix",
        action="store_true",
        help="add as_numpy=True to every predict call whose results reach numpy code, then audit again "
        "(needs libcst: the migrate extra)",
    )
    audit.add_argument("--diff", action="store_true", help="with or without --fix: print the change, write nothing")
    sub.add_parser("doctor", help="configuration, patch state and versions")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "doctor":
        from samgpu_shim.tools import doctor

        return doctor.main()
    if args.command == "soak":
        return _soak(args)
    if args.command == "audit":
        from samgpu_shim.tools import audit as _audit

        return _audit.main(args.paths, as_json=args.json, fix=args.fix, diff=args.diff)
    return _bench(args)


if __name__ == "__main__":
    sys.exit(main())
