"""``samgpu-shim doctor``: what is in force, what is patched, which versions,
and whether they fit together. Exit status 1 when something does not, with the
command that fixes it; third-party warnings raised while importing the SAM
packages are not shown (they are theirs to fix, not the user's)."""

from __future__ import annotations

import re
import warnings
from importlib import metadata
from typing import Dict, List, Mapping, Optional, Tuple

# torch release -> the torchvision release built with it. pip installs them
# independently, and a pair from different releases fails at import
# ("operator torchvision::nms does not exist") or later.
TORCHVISION_FOR_TORCH: Dict[str, str] = {
    "2.1": "0.16",
    "2.2": "0.17",
    "2.3": "0.18",
    "2.4": "0.19",
    "2.5": "0.20",
    "2.6": "0.21",
    "2.7": "0.22",
    "2.8": "0.23",
    "2.9": "0.24",
    "2.10": "0.25",
    "2.11": "0.26",
    "2.12": "0.27",
    "2.13": "0.28",
    "2.14": "0.29",
}
# What samgpu-shim itself declares (setup.cfg install_requires): (lowest, first excluded).
SUPPORTED: Dict[str, Tuple[str, str]] = {
    "torch": ("2.1", "2.15"),
    "numpy": ("1.26", "3"),
    "wrapt": ("1.14", "3"),
}
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _release(version: str) -> Tuple[int, ...]:
    numbers = re.match(r"\d+(\.\d+)*", version)
    return tuple(int(n) for n in numbers.group(0).split(".")) if numbers else ()


def _minor(version: str) -> str:
    return ".".join(str(n) for n in _release(version)[:2])


def _index(torch_build: Optional[str]) -> str:
    """The pip option that installs from the index torch itself came from."""
    local = (torch_build or "").partition("+")[2]
    if local == "cpu" or re.fullmatch(r"cu\d+|rocm[\d.]+", local):
        return f" --index-url https://download.pytorch.org/whl/{local}"
    return ""


def problems(
    versions: Mapping[str, Optional[str]],
    import_errors: Mapping[str, str],
    torch_build: Optional[str] = None,
) -> List[Tuple[str, str]]:
    """(problem, fix) pairs for installed ``versions`` (distribution -> version or
    None), the ``import_errors`` seen (name -> message) and torch's own
    ``torch.__version__`` (its ``+cpu``/``+cuXXX`` tag names the wheel index)."""
    found: List[Tuple[str, str]] = []
    torch_v, vision_v = versions.get("torch"), versions.get("torchvision")
    index = _index(torch_build)
    if torch_v is None:
        found.append(("torch is not installed",
                      f"pip install torch torchvision (CPU only: add --index-url {CPU_INDEX})"))
    elif "torch" in import_errors:
        found.append((f"torch does not import: {import_errors['torch']}",
                      f"pip install --force-reinstall 'torch=={torch_v}'{index}"))
    for dist, (low, high) in SUPPORTED.items():
        have = versions.get(dist)
        if have is not None and not _release(low) <= _release(have) < _release(high):
            found.append((f"{dist} {have} is outside what samgpu-shim supports ({low} <= {dist} < {high})",
                          f"pip install '{dist}>={low},<{high}'" + (index if dist == "torch" else "")))
    want = TORCHVISION_FOR_TORCH.get(_minor(torch_v)) if torch_v else None
    where = index or f" (from the index torch came from; CPU only: --index-url {CPU_INDEX})"
    vision_broken = True
    if torch_v and vision_v and want and _minor(vision_v) != want:
        found.append((f"torchvision {vision_v} does not pair with torch {torch_v} (torch {_minor(torch_v)} goes "
                      f"with torchvision {want})", f"pip install 'torchvision=={want}.*'{where}"))
    elif "torchvision" in import_errors:
        vision = f"'torchvision=={want}.*'" if want else "torchvision"
        pypi = f"'torch=={_minor(torch_v)}.*' {vision}" if torch_v and want else "torch torchvision"
        # torch's tag (+cpu, +cu130) names PyTorch's index it came from; no tag: PyPI
        fix = (f"torchvision from the index torch came from: pip install --force-reinstall --no-deps {vision}{index}\n"
               f"where that index cannot be reached, both from PyPI (a CUDA build of about 5.5 GB, which also "
               f"runs on a CPU): pip install --force-reinstall {pypi}")
        found.append((f"torchvision does not import: {import_errors['torchvision']}", fix))
    else:
        vision_broken = False
    same_cause = []
    for name, message in import_errors.items():
        if name in ("torch", "torchvision"):
            continue
        if vision_broken and ("torchvision" in message or message == import_errors.get("torchvision")):
            same_cause.append(name)
            continue
        missing = re.search(r"No module named '([\w.]+)'", message)
        fix = f"pip install {missing.group(1).split('.')[0]}" if missing else f"pip install --force-reinstall {name}"
        found.append((f"{name} does not import: {message}", fix))
    if same_cause:
        verb = "does" if len(same_cause) == 1 else "do"
        found.append((f"{', '.join(same_cause)}: {verb} not import, for the same reason", "the torchvision fix above"))
    return found


def family_lines(rows: List[Dict[str, str]], errors: Mapping[str, str]) -> List[str]:
    """The families section: one line per family, its patch targets under those patched."""
    lines = []
    for row in rows:
        if row["installed"] != "yes":
            lines.append(f"  {row['family']}: not installed")
        elif row["distribution"] in errors:
            lines.append(f"  {row['family']}: installed, does not import (see the problems below)")
        else:
            lines.append(f"  {row['family']}: installed, {row['status']}")
            lines.append(f"    targets: {row['targets']}")
    return lines


def _version(dist: str) -> Optional[str]:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _first_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}"[:300]


def main() -> int:
    import samgpu_shim
    from samgpu_shim import _config

    print("samgpu-shim", samgpu_shim.__version__)
    print("settings (value in force, and where it comes from):")
    rows = _config.describe()
    # A setting without an environment variable is named by its configure() keyword.
    names = [row["env"] if row["env"].startswith("SAMGPU_") else f"configure({row['setting']}=)" for row in rows]
    width = max(len(n) for n in names)
    for name, row in zip(names, rows):
        print(f"  {name:<{width}}  {row['value']:<14} ({row['source']}; environment: {row['raw']})")
    as_numpy, source = _config.default_as_numpy()
    print(f"in force: default output {'numpy' if as_numpy else 'tensors'} (from {source})")

    errors: Dict[str, str] = {}
    torch_build = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("torch", "torchvision"):
            try:
                module = __import__(name)
                if name == "torch":
                    torch_build = module.__version__
            except ImportError as exc:
                if _version(name) is not None:  # installed yet broken; absent is reported below
                    errors[name] = _first_line(exc)
            except Exception as exc:  # torchvision's "operator torchvision::nms does not exist" is a RuntimeError
                errors[name] = _first_line(exc)
        # Import the families so that their patch state is real, not pending.
        for row in samgpu_shim.status():
            if row["installed"] == "yes":
                try:
                    __import__(row["module"])
                except Exception as exc:  # a broken install is worth seeing, not a crash
                    errors[row["distribution"]] = _first_line(exc)
    print("families:")
    for line in family_lines(samgpu_shim.status(), errors):
        print(line)
    print("versions:")
    dists = ("torch", "torchvision", "numpy", "wrapt", *(row["distribution"] for row in samgpu_shim.status()))
    versions = {dist: _version(dist) for dist in dists}
    for dist in dists:
        print(f"  {dist}: {versions[dist] or 'not installed'}")
    if torch_build is not None:
        import torch

        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            print(f"cuda: {torch.version.cuda}, devices: {names}")
        else:
            print("cuda: not available (the shim returns CPU tensors there)")
    found = problems(versions, errors, torch_build)
    if not found:
        print("problems: none found")
        return 0
    print(f"problems ({len(found)}):")
    for problem, fix in found:
        print(f"  - {problem}")
        first, *others = fix.splitlines()
        print(f"    fix: {first}")
        for other in others:
            print(f"    or, {other}")
    return 1
