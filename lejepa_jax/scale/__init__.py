"""Scale: meshes and logical-axis rules, multi-process start-up, compiler options, run plans."""
