import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "samgpu-shim"
author = "samgpu-shim developers"
copyright = "2026, samgpu-shim developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
autodoc_typehints = "description"
autodoc_mock_imports = ["torch", "numpy"]
exclude_patterns = ["_build"]
html_theme = "alabaster"

# The settings table is generated from samgpu_shim._config.SETTINGS, the one
# table the code reads, so the page cannot drift from the code. _config has
# no package imports: it is loaded alone, without running the autopatch.
import importlib.util  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "_samgpu_config", os.path.join(os.path.dirname(__file__), "..", "samgpu_shim", "_config.py")
)
_config = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _config  # dataclasses look their module up
_spec.loader.exec_module(_config)
os.makedirs(os.path.join(os.path.dirname(__file__), "_generated"), exist_ok=True)
with open(os.path.join(os.path.dirname(__file__), "_generated", "settings.rst"), "w", encoding="utf-8") as _f:
    _f.write(_config.settings_table_rst())
exclude_patterns.append("_generated")
