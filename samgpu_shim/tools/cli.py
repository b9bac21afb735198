"""samgpu-shim: the command line.

Commands: segment (your image and prompts through upstream and the shim, an
overlay of the masks), bench (upstream against the shim, interleaved), soak
(memory over many calls), audit (code that still needs numpy; --fix pins it),
kpi (a report of KPI files), doctor (settings, patch state, versions and
whether they fit together). Every mistake in the arguments is a one-line
error and exit status 2, found before torch is imported where the check needs
no torch; no command ends in a traceback (a closed pipe ends it quietly).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
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


def _say(text: str) -> None:
    """A progress line, on stderr so that the report on stdout stays clean."""
    print(text, file=sys.stderr, flush=True)


_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")
_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


def _image_size(text: str) -> tuple:
    match = _SIZE.match(text)
    if not match:
        raise CliError(f"--image {text!r}: expected HEIGHTxWIDTH, e.g. 1080x1920")
    h, w = int(match.group(1)), int(match.group(2))
    if h < 1 or w < 1 or h > 16384 or w > 16384:
        raise CliError(f"--image {text!r}: each side must be between 1 and 16384 pixels")
    return h, w


def _image_file(option: str, path: str) -> tuple:
    """(height, width) of an image file, read from its header (no torch, no decoding)."""
    if os.path.isdir(path):
        raise CliError(f"{option}{path}: is a folder, give an image file")
    if not os.path.isfile(path):
        raise CliError(f"{option}{path}: no such file")
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise CliError("reading an image file needs Pillow: pip install pillow") from None
    try:
        with Image.open(path) as img:
            w, h = img.size
    except UnidentifiedImageError:
        raise CliError(f"{option}{path}: not an image file that Pillow can read (PNG, JPEG, TIFF, BMP ...)") from None
    except OSError as exc:
        raise CliError(f"{option}{path}: cannot be read ({exc.strerror or exc})") from None
    return h, w


def _bench_image(text: str) -> tuple:
    """--image of bench: ("size", (h, w)) or ("file", (h, w)) for an existing image file."""
    if _SIZE.match(text) or not os.path.exists(text):
        if not _SIZE.match(text):
            raise CliError(f"--image {text!r}: expected HEIGHTxWIDTH, e.g. 1080x1920, or an image file "
                           "(there is no file of that name)")
        return "size", _image_size(text)
    return "file", _image_file("--image ", text)


def _numbers(option: str, text: str, count: int, what: str) -> List[float]:
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != count or any(v != v or v in (float("inf"), float("-inf")) for v in values):
        raise CliError(f"{option} {text!r}: expected {what}")
    return values


def _inside(option: str, text: str, x: float, y: float, hw: tuple) -> None:
    h, w = hw
    if not (0 <= x < w and 0 <= y < h):
        raise CliError(f"{option} {text}: outside the image ({w}x{h} pixels: x from 0 to {w - 1}, "
                       f"y from 0 to {h - 1})")


def _checkpoint(path: Optional[str]) -> None:
    if not path:
        return
    if os.path.isdir(path):
        raise CliError(f"--checkpoint {path}: is a folder, give the checkpoint file")
    if not os.path.isfile(path):
        raise CliError(f"--checkpoint {path}: no such file")
    if not os.access(path, os.R_OK):
        raise CliError(f"--checkpoint {path}: not readable")


def _device_name(name: str) -> None:
    """The spelling of --device, checked without torch."""
    if not _DEVICE.match(name):
        raise CliError(f"--device {name}: not a device; use auto, cpu, cuda or cuda:N")


def _torch() -> None:
    """torch, and torchvision when installed, import: or one line pointing at doctor."""
    import warnings

    for name in ("torch", "torchvision"):
        if name == "torchvision" and name not in sys.modules and importlib.util.find_spec(name) is None:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                __import__(name)
        except Exception as exc:  # torchvision from another release: RuntimeError, operator ... does not exist
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CliError(f"{name} does not import ({first}); 'samgpu-shim doctor' names the fix") from None


def _device(name: str) -> None:
    _device_name(name)
    _torch()
    import torch

    device = torch.device("cuda" if name == "auto" and torch.cuda.is_available() else
                          ("cpu" if name == "auto" else name))
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CliError(f"--device {name}: no CUDA device is available here (use --device cpu or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CliError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def _family_and_models(family: Optional[str], names: Optional[List[str]], checkpoint: Optional[str]) -> tuple:
    """(family, model names) with the defaults filled in, checked against the family table (no torch).

    With a checkpoint, the family and architecture come from the file unless given; only
    the families whose official checkpoints are understood take one.
    """
    from samgpu_shim.tools.models import FAMILIES

    if checkpoint:
        if family is not None and family not in ("sam", "sam2", "sam3"):
            raise CliError(f"--checkpoint: checkpoints are read for --family sam, sam2 and sam3, not {family} "
                           "(drop --checkpoint to run it with random weights)")
        if names and len(names) > 1:
            raise CliError("--checkpoint holds one model; give at most one --model")
    family_key = family or "sam"
    package, extra, known = FAMILIES[family_key]
    if (family is not None or not checkpoint) and importlib.util.find_spec(package) is None:
        raise CliError(f"--family {family}: {package} is not installed (pip install 'samgpu-shim[{extra}]')")
    if checkpoint and family is None:  # the file names the family: any of theirs may fit
        known = tuple(n for f in ("sam", "sam2", "sam3") for n in FAMILIES[f][2])
    unknown = [m for m in names or () if m not in known]
    if unknown:
        where = "a checkpoint's family" if checkpoint and family is None else f"--family {family_key}"
        raise CliError(f"{where} has no model {', '.join(unknown)}; choose from {', '.join(dict.fromkeys(known))}")
    if checkpoint:
        return family, names[0] if names else None
    return family_key, names or [known[0]]


def _check_common(args: argparse.Namespace) -> None:
    if args.calls is not None and args.calls < 1:
        raise CliError(f"--calls {args.calls}: must be at least 1")
    _device_name(args.device)
    _writable("--json", args.json)


def _check_bench(args: argparse.Namespace) -> None:
    """Every check that needs no torch; the device's availability is checked after."""
    _check_common(args)
    args.image_kind, args.image_hw = _bench_image(args.image)
    if args.warmup < 0:
        raise CliError(f"--warmup {args.warmup}: must be 0 or more")
    _checkpoint(args.checkpoint)
    if args.compile and args.family not in (None, "sam") and not args.frames:
        raise CliError("--compile builds the reference for segment-anything's prompt-to-mask work; drop --family")
    if args.checkpoint and args.frames:
        raise CliError("--frames times random-weight models of each family; drop --checkpoint")
    args.family, args.model = _family_and_models(args.family, args.model, args.checkpoint)
    if args.checkpoint:
        args.model = [args.model] if args.model else []
    if args.frames and args.image_kind == "file":
        raise CliError("--frames makes its own frames; give --image as HEIGHTxWIDTH")
    if args.plot:
        if importlib.util.find_spec("matplotlib") is None:
            raise CliError("--plot needs matplotlib: pip install 'samgpu-shim[plot]'")
        _writable("--plot", args.plot)


def _bench(args: argparse.Namespace) -> int:
    _check_bench(args)
    what = f"{args.checkpoint}" if args.checkpoint else f"{args.family} {' '.join(args.model)}, random weights"
    _say(f"samgpu-shim bench: {what}; importing torch ...")
    _device(args.device)
    from samgpu_shim.tools import bench as _bench

    if args.frames:
        from samgpu_shim.tools import frames as runner
    else:
        runner = _bench  # type: ignore[assignment]
    try:
        report = runner.run(args)
    except _checkpoint_error() as exc:
        raise CliError(str(exc)) from None
    print(runner.format_table(report))
    _save_json(report, args.json)
    if args.plot:
        _bench.plot(report, args.plot)
        print(f"saved {args.plot}")
    return 0


def _checkpoint_error() -> type:
    from samgpu_shim.tools.checkpoints import CheckpointError

    return CheckpointError


def _segment(args: argparse.Namespace) -> int:
    if args.calls is not None and args.calls < 1:
        raise CliError(f"--calls {args.calls}: must be at least 1")
    _device_name(args.device)
    hw = _image_file("", args.image)
    points = []
    for text in args.point or ():
        x, y = _numbers("--point", text, 2, "X,Y in pixels, e.g. 320,240")
        _inside("--point", text, x, y, hw)
        points.append((x, y, 1))
    for text in args.bg_point or ():
        x, y = _numbers("--bg-point", text, 2, "X,Y in pixels, e.g. 320,240")
        _inside("--bg-point", text, x, y, hw)
        points.append((x, y, 0))
    box = None
    if args.box:
        box = _numbers("--box", args.box, 4, "X0,Y0,X1,Y1 in pixels (left, top, right, bottom)")
        if not (box[0] < box[2] and box[1] < box[3]):
            raise CliError(f"--box {args.box}: needs X0 < X1 and Y0 < Y1 (left, top, right, bottom)")
        h, w = hw
        if box[0] < 0 or box[1] < 0 or box[2] > w or box[3] > h:
            raise CliError(f"--box {args.box}: outside the image ({w}x{h} pixels: x from 0 to {w}, y from 0 to {h})")
    centre = not points and box is None
    if centre:
        points.append((hw[1] // 2, hw[0] // 2, 1))
    _checkpoint(args.checkpoint)
    family, model = _family_and_models(args.family, [args.model] if args.model else None, args.checkpoint)
    if not args.checkpoint:
        model = model[0]
    if not args.out.lower().endswith(".png"):
        raise CliError(f"--out {args.out}: the overlay is a PNG; give a name ending in .png")
    _writable("--out", args.out)
    _writable("--json", args.json)
    what = args.checkpoint or f"{family} {model} with random weights"
    _say(f"samgpu-shim segment: {args.image} with {what}; importing torch ...")
    if centre:
        _say(f"no --point or --box: one point at the centre ({points[0][0]},{points[0][1]})")
    _device(args.device)
    from samgpu_shim.tools import segment as _seg
    from samgpu_shim.tools.bench import pick_device

    device = pick_device(args.device)
    calls = args.calls if args.calls is not None else (50 if device.type == "cuda" else 10)
    try:
        report = _seg.run(args.image, points, box, family=family, model=model,
                          checkpoint=args.checkpoint, device=device, calls=calls)
    except _checkpoint_error() as exc:
        raise CliError(str(exc)) from None
    print(_seg.format_report(report))
    _seg.overlay(report, args.out)
    print(f"saved {args.out}")
    _save_json({k: v for k, v in report.items() if not k.startswith("_")}, args.json)
    return 0


def _soak(args: argparse.Namespace) -> int:
    _check_common(args)
    _image_size(args.image)
    _device(args.device)
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


# Folders the audit does not enter (kept in step with its own walk).
_AUDIT_SKIPS = ("__pycache__", "node_modules", ".ipynb_checkpoints", "site-packages")


def _notebook_problem(path: str) -> Optional[str]:
    """Why a notebook cannot be audited, or None: the structure the audit reads
    (a JSON object whose cells are objects with a source)."""
    try:
        with open(path, encoding="utf-8") as f:
            nb = json.load(f)
    except UnicodeDecodeError:
        return "not UTF-8 text"
    except ValueError as exc:
        return f"not JSON ({exc})"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if not isinstance(nb, dict) or not isinstance(nb.get("cells", []), list):
        return "not a notebook (no list of cells)"
    for cell in nb.get("cells", []):
        if not isinstance(cell, dict) or not isinstance(cell.get("source", ""), (str, list)):
            return "not a notebook (a cell is not an object with a source)"
    return None


def _binary(head: bytes) -> bool:
    if b"\0" in head:
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start < len(head) - 3  # a character cut by the end of the block is no fault
    return False


def _check_audit_paths(paths: List[str]) -> None:
    """Files the audit cannot read are reported here, one line, before it starts:
    a binary file given by name (a photo, a model), a notebook that is not one."""
    for path in paths:
        if os.path.isfile(path) and not path.endswith(".ipynb"):
            try:
                with open(path, "rb") as f:
                    head = f.read(1 << 16)
            except OSError as exc:
                raise CliError(f"{path}: cannot be read ({exc.strerror or exc})") from None
            if _binary(head):
                raise CliError(f"{path}: not a text file (binary, or not UTF-8); audit takes .py files, "
                               ".ipynb notebooks and folders")
    notebooks = [p for p in paths if os.path.isfile(p) and p.endswith(".ipynb")]
    for path in paths:
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _AUDIT_SKIPS)
                notebooks.extend(os.path.join(root, n) for n in sorted(files) if n.endswith(".ipynb"))
    for path in notebooks:
        problem = _notebook_problem(path)
        if problem:
            raise CliError(f"{path}: {problem}; fix it or leave it out of the paths")


def _version() -> str:
    import samgpu_shim

    return f"samgpu-shim {samgpu_shim.__version__}"


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(
        prog="samgpu-shim",
        description="GPU-resident Segment Anything predict: try it on your image (segment), benchmark it "
        "(bench, soak), migrate code to it (audit, audit --fix), report on its KPI files (kpi) and check an "
        "install (doctor).",
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="{segment,bench,soak,audit,kpi,doctor}")
    families = ["sam", "sam2", "sam3", "hq", "mobile", "efficientvit"]
    family_help = (
        "sam: segment-anything's SamPredictor; sam2: SAM 2's SAM2ImagePredictor; sam3: SAM 3's "
        "SAM3InteractiveImagePredictor; hq: SAM-HQ; mobile: MobileSAM; efficientvit: EfficientViT-SAM "
        "(None: sam, or the checkpoint's family)"
    )
    model_names = (
        "sam: tiny vit_b vit_l vit_h; sam2: tiny hiera_t hiera_s hiera_b+ hiera_l; sam3: tiny full; "
        "hq: vit_b vit_l vit_h; mobile: vit_t; efficientvit: l0 l1 l2 xl0 xl1"
    )
    checkpoint_help = (
        "a checkpoint file in its official format: segment-anything's sam_vit_*.pth, SAM 2.1's .pt, SAM 3's "
        "sam3.pt (family and architecture read from it; nothing is downloaded). None: random weights"
    )
    segment = sub.add_parser(
        "segment", help="your image and prompts through upstream and the shim: an overlay PNG, timing, syncs",
        formatter_class=fmt,
    )
    segment.add_argument("image", help="an image file (PNG, JPEG, ...)")
    segment.add_argument("--point", action="append", metavar="X,Y",
                         help="a foreground point in pixels; repeat for more (None: the image's centre, "
                         "unless --box is given)")
    segment.add_argument("--bg-point", action="append", metavar="X,Y", help="a background point; repeat for more")
    segment.add_argument("--box", metavar="X0,Y0,X1,Y1", help="a box in pixels: left, top, right, bottom")
    segment.add_argument("--checkpoint", metavar="PATH", help=checkpoint_help)
    segment.add_argument("--family", choices=families, help=family_help)
    segment.add_argument("--model", help="architecture (None: read from the checkpoint, else the family's "
                         f"smallest); {model_names}")
    segment.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1, ...")
    segment.add_argument("--calls", type=int, default=None,
                         help="timed calls per path (None: 50 on CUDA, 10 on a CPU)")
    segment.add_argument("--out", default="overlay.png", metavar="PATH",
                         help="the overlay: one panel per mask, tinted over the image, with its score")
    segment.add_argument("--json", metavar="PATH", help="save the scores, timings and syncs as JSON")
    bench = sub.add_parser("bench", help="upstream predict against the shim, interleaved", formatter_class=fmt)
    bench.add_argument("--family", choices=families, help=family_help)
    bench.add_argument(
        "--model",
        nargs="+",
        metavar="MODEL",
        help="architectures, random weights (None: tiny, which runs on a CPU in seconds, or the checkpoint's); "
        + model_names,
    )
    bench.add_argument("--checkpoint", metavar="PATH", help=checkpoint_help)
    bench.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1, ...")
    bench.add_argument("--image", default="1080x1920",
                       help="frame size HEIGHTxWIDTH (a synthetic frame), or an image file")
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
    sub.add_parser(
        "doctor", help="settings in force, patch state, versions and whether they fit together (exit 1 if not)",
        formatter_class=fmt,
    )
    return parser


def _command(args: argparse.Namespace) -> int:
    if args.command == "doctor":
        from samgpu_shim.tools import doctor

        return doctor.main()
    if args.command == "soak":
        return _soak(args)
    if args.command == "kpi":
        return _kpi(args)
    if args.command == "audit":
        _check_audit_paths(args.paths)
        from samgpu_shim import migrate as _audit

        return _audit.main(args.paths, as_json=args.json, fix=args.fix, diff=args.diff)
    if args.command == "segment":
        return _segment(args)
    return _bench(args)


def _quiet_stdout() -> None:
    # The reader went away (| head): later writes, and the interpreter's own
    # flush at exit, go nowhere instead of raising again.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = _command(args)
        sys.stdout.flush()  # a reader gone away shows here, not in the interpreter's flush at exit
        return code
    except CliError as exc:
        print(f"samgpu-shim {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"samgpu-shim {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        return 141  # what a shell reports for a program stopped by a closed pipe
    except Exception as exc:  # the last line of defence: one line, where it happened, no traceback
        where = ""
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if tb is not None:
            where = f" (at {os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno})"
        message = (str(exc).strip().splitlines() or [""])[0]
        print(f"samgpu-shim {args.command}: internal error: {type(exc).__name__}: {message}{where}; please report it",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
