"""``samgpu-shim doctor``: what is in force, what is patched, which versions."""

from __future__ import annotations

from importlib import metadata


def main() -> int:
    import samgpu_shim
    from samgpu_shim import _config

    print("samgpu-shim", samgpu_shim.__version__)
    print("settings (value in force, and where it comes from):")
    rows = _config.describe()
    width = max(len(r["env"]) for r in rows)
    for row in rows:
        print(f"  {row['env']:<{width}}  {row['value']:<14} ({row['source']}; environment: {row['raw']})")
    as_numpy, source = _config.default_as_numpy()
    print(f"in force: default output {'numpy' if as_numpy else 'tensors'} (from {source})")
    # Import the families so that their patch state is real, not pending.
    for row in samgpu_shim.status():
        if row["installed"] == "yes":
            try:
                __import__(row["module"])
            except Exception as exc:  # a broken install is worth seeing, not a crash
                print(f"  import of {row['family']} failed: {exc}")
    print("families:")
    for row in samgpu_shim.status():
        print(f"  {row['family']}: installed {row['installed']}, {row['status']}")
        print(f"    targets: {row['targets']}")
    print("versions:")
    for dist in ("torch", "torchvision", "numpy", "wrapt", *(row["distribution"] for row in samgpu_shim.status())):
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = "not installed"
        print(f"  {dist}: {version}")
    try:
        import torch

        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            print(f"cuda: {torch.version.cuda}, devices: {names}")
        else:
            print("cuda: not available (the shim returns CPU tensors there)")
    except ImportError:
        print("torch: not importable")
    return 0
