"""The ``sse-commander`` command: serve and configure a server, or use one as a client (app/client)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import click

from .client.commands import COMMANDS, ClientCommand
from .client.exitcodes import EXIT_CLIENT_ERROR, EXIT_DETACHED
from .config import ConfigError, describe_store, load_settings, redact_store_url

EXIT_USAGE = 2  # the server-side commands' usage and configuration errors, as before


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sse-commander", prog_name="sse-commander")
def cli() -> None:
    """Run commands on a host over HTTP and stream their output live as Server-Sent Events.

    serve, settings, token, password and history are for the server; the other commands use a server as a client:
    --url or SSECMD_URL says which, and the token comes from SSECMD_TOKEN or --token-file.
    """


def _load_settings_or_exit():
    try:
        return load_settings()
    except ConfigError as exc:
        click.echo(f"sse-commander: configuration error: {exc}", err=True)
        raise click.exceptions.Exit(EXIT_USAGE) from None


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": False})
@click.argument("gunicorn_args", nargs=-1, type=click.UNPROCESSED, metavar="[GUNICORN OPTIONS]...")
def serve(gunicorn_args: tuple[str, ...]) -> None:
    """Run gunicorn with the gevent worker and the bundled settings; other options go to gunicorn."""
    _load_settings_or_exit()
    command = [
        sys.executable, "-m", "gunicorn", "-c", "python:app.server.gunicorn_conf",
        *gunicorn_args, "app:create_app()",
    ]
    os.execv(sys.executable, command)


@cli.command()
def settings() -> None:
    """Print the effective settings as JSON and exit."""
    shown = dataclasses.asdict(_load_settings_or_exit())
    if shown["session_secret"]:
        shown["session_secret"] = "(set)"
    shown["store_url"] = redact_store_url(shown["store_url"])
    shown["store"] = describe_store(_load_settings_or_exit())  # the backend in words (issue 16)
    click.echo(json.dumps(shown, indent=2, default=list))


@cli.group()
def history() -> None:
    """The history on disk (data_dir): retention by hand, and one job's record and output."""


def _history_database():
    """(settings, a connection to the history database, the jobs' directory), or exit with why not."""
    from .store.history import database
    from .store.history.datadir import DATABASE, JOBS_DIR, DataDirError, prepare_data_dir, resolve_data_dir

    settings = _load_settings_or_exit()
    if not settings.history:
        click.echo("sse-commander: history = false: there is no history on disk", err=True)
        raise click.exceptions.Exit(EXIT_USAGE)
    try:
        data_dir = prepare_data_dir(resolve_data_dir(settings.data_dir))
        conn = database.connect(os.path.join(data_dir, DATABASE))
        database.create_schema(conn)
    except (DataDirError, OSError, database.sqlite3.Error) as exc:
        click.echo(f"sse-commander: {exc}", err=True)
        raise click.exceptions.Exit(1) from None
    return settings, conn, os.path.join(data_dir, JOBS_DIR)


@history.command()
def prune() -> None:
    """Forget finished jobs beyond max_finished_jobs, finished_job_ttl and history_max_bytes, oldest first."""
    from .store.history import database

    settings, conn, jobs_dir = _history_database()
    with conn:
        jobs, freed = database.prune(conn, jobs_dir, max_finished=settings.max_finished_jobs,
                                     ttl=settings.finished_job_ttl, max_bytes=settings.history_max_bytes)
    click.echo(f"forgot {jobs} finished job(s), {freed} bytes")


@history.command()
@click.argument("job_id")
@click.option("--to", "directory", type=click.Path(file_okay=False, writable=True), default=".",
              show_default=True, help="Where to write job-<ID>.json (its record) and job-<ID>.log (its output).")
def export(job_id: str, directory: str) -> None:
    """Write one job's record (JSON) and its output (the bytes as the command wrote them)."""
    from .store.history import database, records

    _, conn, jobs_dir = _history_database()
    with conn:
        found = database.fetch_job(conn, job_id)
    if found is None:
        click.echo(f"sse-commander: no job {job_id!r} in the history", err=True)
        raise click.exceptions.Exit(1)
    job, _, _ = found
    os.makedirs(directory, exist_ok=True)
    record_path = os.path.join(directory, f"job-{job.id}.json")
    output_path = os.path.join(directory, f"job-{job.id}.log")
    damaged = job.damaged
    with open(output_path, "wb") as out:
        try:
            with open(records.events_path(jobs_dir, job.id), "rb") as fh:
                offset = 0
                while True:
                    scan = records.read_records(fh, offset, limit=256)
                    out.write(b"".join(event.raw for event in scan.events))
                    damaged = damaged or scan.damaged
                    if not scan.events:
                        break
                    offset = scan.end
        except FileNotFoundError:
            pass
    job.damaged = damaged
    with open(record_path, "w") as fh:
        json.dump(job.to_json(), fh, indent=2)
        fh.write("\n")
    click.echo(record_path)
    click.echo(output_path)


roles_option = click.option("--roles", default="operator", show_default=True, help="Comma-separated roles.")


@cli.command()
@click.option("--user", required=True, help="Who the token is for.")
@roles_option
def token(user: str, roles: str) -> None:
    """Create an API token; prints it once, and the [[tokens]] entry for the config."""
    from .policy.access import hash_token, new_token

    secret = new_token()
    click.echo(f"# the token for {user}, shown only now, then the entry for the config file:", err=True)
    click.echo(secret)
    click.echo(f'[[tokens]]\nuser = {_toml_string(user)}\nroles = {_toml_list(_roles(roles))}\n'
               f'hash = "{hash_token(secret)}"')


@cli.command()
@click.option("--user", required=True, help="Who the password is for.")
@roles_option
def password(user: str, roles: str) -> None:
    """Hash a password (read from stdin) for a [[users]] entry."""
    from .policy.access import hash_password

    secret = sys.stdin.readline().rstrip("\n")
    if not secret:
        click.echo("sse-commander: give the password on standard input", err=True)
        raise click.exceptions.Exit(EXIT_USAGE)
    entry = f'[[users]]\nname = {_toml_string(user)}\nroles = {_toml_list(_roles(roles))}\n'
    click.echo(entry + f'password_hash = "{hash_password(secret)}"')


for _command in COMMANDS:
    cli.add_command(_command)


def _roles(text: str) -> list[str]:
    return [role.strip() for role in text.split(",") if role.strip()]


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(_toml_string(item) for item in items) + "]"


def _toml_string(text: str) -> str:
    # JSON strings are TOML basic strings, except that TOML has no surrogate-pair escapes.
    return json.dumps(text, ensure_ascii=False)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script: the exit status, never a traceback for a usage error or Ctrl-C."""
    try:
        result = cli.main(args=argv, prog_name="sse-commander", standalone_mode=False)
    except click.exceptions.Abort:
        return EXIT_DETACHED
    except click.ClickException as exc:
        exc.show()
        context = getattr(exc, "ctx", None)
        return EXIT_CLIENT_ERROR if context and isinstance(context.command, ClientCommand) else exc.exit_code
    return result if isinstance(result, int) else 0
