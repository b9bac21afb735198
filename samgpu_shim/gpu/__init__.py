"""The device side, shared by every family: prompt staging, sync-free steps,
graph mode, the image half and strict mode. Nothing here imports
:mod:`samgpu_shim.tools` or a family module."""
