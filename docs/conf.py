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
