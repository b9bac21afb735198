import sys

from samgpu_shim.tools.cli import main

sys.exit(main())
