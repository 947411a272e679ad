"""`surfacer review ...`: schema migrations, analysts, queue stats and label export."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from common.settings import get_settings


def _store(database_url: str | None):  # type: ignore[no-untyped-def]
    from serving.review.store import ReviewStore

    settings = get_settings()
    if database_url:
        settings = settings.model_copy(update={"database_url": database_url})
    return ReviewStore.from_settings(settings)


_URL = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="Review store URL (default: SURFACER_DATABASE_URL, else SQLite in data_dir).",
    ),
]


def register(app: typer.Typer) -> None:
    """Add the `review` command group to the `surfacer` app."""
    review = typer.Typer(help="The analyst review queue: schema, analysts, stats, label export.")
    app.add_typer(review, name="review")

    @review.command("migrate")
    def migrate_cmd(database_url: _URL = None) -> None:
        """Create or upgrade the review store schema (Alembic upgrade head)."""
        store = _store(database_url)
        try:
            typer.echo(f"review store at revision {store.migrate()}")
        finally:
            store.close()

    @review.command("add-analyst")
    def add_analyst_cmd(
        name: Annotated[str, typer.Argument(help="The analyst's login name.")],
        admin: Annotated[
            bool, typer.Option(help="May release or label items other analysts hold.")
        ] = False,
        reset: Annotated[
            bool, typer.Option(help="Set a new password for an existing analyst.")
        ] = False,
        password_stdin: Annotated[
            bool, typer.Option(help="Read the password from standard input (one line).")
        ] = False,
        database_url: _URL = None,
    ) -> None:
        """Create an analyst account (password hashed with Argon2) for the console and API."""
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
        store = _store(database_url)
        try:
            store.migrate()
            analyst = store.add_analyst(name, password, admin=admin, replace=reset)
        finally:
            store.close()
        role = "admin analyst" if analyst.is_admin else "analyst"
        typer.echo(f"{role} {analyst.name!r} {'updated' if reset else 'created'}")

    @review.command("disable-analyst")
    def disable_analyst_cmd(
        name: Annotated[str, typer.Argument(help="The analyst's login name.")],
        database_url: _URL = None,
    ) -> None:
        """Lock an analyst out and end their sessions (labels they made stay)."""
        store = _store(database_url)
        try:
            store.migrate()
            store.disable_analyst(name)
        finally:
            store.close()
        typer.echo(f"analyst {name!r} disabled")

    @review.command("analysts")
    def analysts_cmd(database_url: _URL = None) -> None:
        """List the analyst accounts."""
        store = _store(database_url)
        try:
            store.migrate()
            rows = store.analysts()
        finally:
            store.close()
        for analyst, enabled in rows:
            flags = [f for f, on in (("admin", analyst.is_admin), ("disabled", not enabled)) if on]
            typer.echo(analyst.name + (f" ({', '.join(flags)})" if flags else ""))

    @review.command("stats")
    def stats_cmd(database_url: _URL = None) -> None:
        """Print queue counts by status and stratum, labels, and live quality per issue."""
        store = _store(database_url)
        try:
            store.migrate()
            st = store.stats()
            typer.echo(f"revision {st.revision}; labels {st.labels}")
            typer.echo("status:  " + ", ".join(f"{k}={v}" for k, v in sorted(st.by_status.items())))
            typer.echo(
                "stratum: " + ", ".join(f"{k}={v}" for k, v in sorted(st.by_stratum.items()))
            )
            for q in store.quality():
                prec = "-" if q.precision is None else f"{q.precision:.3f}"
                rec = "-" if q.recall is None else f"{q.recall:.3f}"
                typer.echo(
                    f"{q.issue}: flagged={q.flagged} labeled={q.flagged_labeled} "
                    f"precision={prec} sampled_labeled={q.sampled_labeled} recall~{rec}"
                )
        finally:
            store.close()

    @review.command("export-labels")
    def export_cmd(
        out: Annotated[
            Path,
            typer.Option(help="Dataset folder or labels file (DIR/labels.parquet) to write."),
        ],
        merge: Annotated[
            bool, typer.Option(help="Keep labels already in the file (de-duplicated).")
        ] = True,
        database_url: _URL = None,
    ) -> None:
        """Export analyst labels to a dataset's `labels` table, for `surfacer train`."""
        from serving.review.export import export_labels

        store = _store(database_url)
        try:
            store.migrate()
            path, n = export_labels(store, out, merge=merge)
        finally:
            store.close()
        typer.echo(f"wrote {n} labels to {path}")
