"""`surfacer` commands owned by the simulator package (thin wrappers over importable functions)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def simulate_command(
    out: Annotated[Path, typer.Option("--out", help="Output dataset folder (created atomically).")],
    items: Annotated[
        int, typer.Option("--items", min=50, help="Organic items to simulate (campaigns add more).")
    ] = 20_000,
    days: Annotated[int, typer.Option("--days", min=2, help="Length of the window in days.")] = 28,
    seed: Annotated[
        int, typer.Option("--seed", min=0, help="Random seed (same seed, same data).")
    ] = 0,
    incidents: Annotated[
        Path | None,
        typer.Option(
            "--incidents",
            help="JSON file with a list of incidents ({id, kind, start_day, end_day, segment, "
            "strength}); default: four planted incidents in the second half of the window.",
        ),
    ] = None,
    world_seed: Annotated[
        int | None,
        typer.Option(
            "--world-seed",
            min=0,
            help="Draw the world's parameters (base rates, traffic, label noise, review, "
            "appeals, incident sizes, spam and abuse vocabulary) from the ranges in "
            "simulator/worlds.py; default: the default world.",
        ),
    ] = None,
    review_rate: Annotated[
        float | None,
        typer.Option(
            "--review-rate",
            min=0.0,
            max=1.0,
            help="Share of items analysts label (default 0.3, or the drawn world's 2-10%).",
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the output folder if it is not empty.")
    ] = False,
) -> None:
    """Simulate a short-video ecosystem with planted incidents and write it as a dataset."""
    from simulator.config import SimConfig, load_incidents
    from simulator.core import simulate, summarize, write_simulation

    planted = load_incidents(incidents) if incidents is not None else None
    settings: dict = {"n_items": items, "days": days, "seed": seed, "incidents": planted}
    if review_rate is not None:
        settings["review_rate"] = review_rate
    if world_seed is None:
        config = SimConfig(**settings)
    else:
        from simulator.worlds import draw_world

        config = draw_world(world_seed).config(**settings)
    sim = simulate(config, progress=True)
    path = write_simulation(sim, out, overwrite=overwrite)
    typer.echo(f"wrote {path}")
    typer.echo(summarize(sim))


def register(app: typer.Typer) -> None:
    """Add this package's commands to the `surfacer` app."""
    app.command("simulate")(simulate_command)
