"""`avvp synth clips`: synthetic test data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .output import console, err_console, user_errors

synth_app = typer.Typer(help="Make synthetic test data.", no_args_is_help=True)


@synth_app.command("clips")
@user_errors
def synth_clips(
    out_dir: Annotated[
        Path, typer.Argument(metavar="DIR", help="Folder for videos/ and the LLP label files.")
    ],
    n: Annotated[int, typer.Option("--n", metavar="N", help="Number of clips.")] = 8,
    seconds: Annotated[float, typer.Option(metavar="S", help="Length of each clip.")] = 10.0,
    seed: Annotated[int, typer.Option(metavar="N", help="Random seed.")] = 0,
) -> None:
    """Tiny real video files with planted audio and visual events, plus LLP label files."""
    from ..synthetic.clips import write_synthetic_clips

    with err_console.status(f"writing {n} clips..."):
        paths = write_synthetic_clips(out_dir, n=n, seconds=seconds, seed=seed)
    console.print(f"wrote {len(paths)} clips to [bold]{out_dir / 'videos'}[/] and label files")
