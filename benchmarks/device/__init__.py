"""The offline GPU kit and its stages (docs/gpu.md): `kit` (standard library only: it runs before the kit's wheels are
installed), `overhead` and `accuracy`, and the shell scripts that drive them on the GPU machine."""
