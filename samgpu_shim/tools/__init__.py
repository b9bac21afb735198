"""Tooling around the runtime: the command line, doctor, benchmarks, soak,
the migration audit and its fixer, the result-packet pipeline and the
random-weight model builders (public: tests and examples import
``samgpu_shim.tools.models``). Runtime modules never import from here."""
