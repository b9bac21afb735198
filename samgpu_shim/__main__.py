import sys

from samgpu_shim._cli import main

sys.exit(main())
