"""`--accelerate_config NAME|FILE`: the accelerate configs shipped in `ilrec_trl/scripts/accelerate_configs/` and a
script relaunching itself under `accelerate launch`, as `trl sft --accelerate_config` does."""

from importlib import resources
from pathlib import Path

from ..errors import UserError


def accelerate_config_path(name: str) -> str:
    """A shipped accelerate config by name (`ddp`, `zero2`, `zero3`, `zero3_offload`) or a path to one."""
    if Path(name).is_file():
        return name
    shipped = resources.files("ilrec_trl.scripts") / "accelerate_configs"
    candidate = shipped / f"{name}.yaml"
    if not candidate.is_file():
        names = sorted(p.name[:-5] for p in shipped.iterdir() if p.name.endswith(".yaml"))
        raise UserError(f"--accelerate_config {name!r} is neither a file nor a shipped config: choose one of {names} "
                         f"or give the path of an accelerate config file.")
    return str(candidate)


def launch_with_accelerate(argv: list[str], module: str) -> None:
    """`--accelerate_config NAME|FILE` in `argv`: run `python -m module` with the rest of `argv` under
    `accelerate launch --config_file ...` (like `trl sft --accelerate_config`)."""
    from accelerate.commands.launch import launch_command, launch_command_parser

    i = argv.index("--accelerate_config")
    if i + 1 >= len(argv):
        raise UserError("--accelerate_config needs a value: a shipped config name or a file.")
    config_file = accelerate_config_path(argv[i + 1])
    rest = argv[:i] + argv[i + 2:]
    launch_command(launch_command_parser().parse_args(["--config_file", config_file, "-m", module, *rest]))
