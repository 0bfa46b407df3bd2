"""Migration runner and schema: applied in order once, refusals, concurrency, models.sql equality."""
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest

from db import migrate
from core.errors import MigrationError

ROOT = Path(__file__).resolve().parent.parent


def run_program(args: list[str], database_url: str, **extra_env) -> subprocess.CompletedProcess:
    env = {**os.environ, "ENV_FILE": "/nonexistent/.env", "DATABASE_URL": database_url, **extra_env}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env=env)


def applied_versions(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT version, name, checksum FROM schema_migrations ORDER BY version").fetchall()


def next_number() -> str:
    return f"{len(migrate.discover()) + 1:04d}"


def all_versions() -> list[int]:
    return list(range(1, len(migrate.discover()) + 1))


def copy_migrations(tmp_path: Path) -> Path:
    target = tmp_path / "migrations"
    shutil.copytree(ROOT / "migrations", target)
    return target


def test_discover_finds_numbered_files_in_order():
    migrations = migrate.discover()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert migrations[0].label == "0001_core_schema"


def test_migrate_cli_applies_everything_then_is_a_no_op(empty_db_url):
    first = run_program(["dr.py", "migrate"], empty_db_url)
    assert first.returncode == 0, first.stderr
    count = len(migrate.discover())
    assert first.stdout.count("applied 0") == count
    before = applied_versions(empty_db_url)
    assert [row[0] for row in before] == list(range(1, count + 1))

    second = run_program(["dr.py", "migrate"], empty_db_url)
    assert second.returncode == 0, second.stderr
    assert "applied 0" not in second.stdout and "0 applied now" in second.stdout
    assert applied_versions(empty_db_url) == before


def test_edited_migration_is_refused(empty_db_url, tmp_path):
    directory = copy_migrations(tmp_path)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        migrate.migrate(conn, migrate.discover(directory))
        path = directory / "0001_core_schema.sql"
        path.write_text(path.read_text() + "\n-- a harmless-looking edit\n")
        with pytest.raises(MigrationError, match="0001_core_schema was edited"):
            migrate.migrate(conn, migrate.discover(directory))
        with pytest.raises(MigrationError, match="python dr.py migrate"):
            migrate.check_current(conn, migrate.discover(directory))


def test_missing_number_is_refused(tmp_path):
    directory = copy_migrations(tmp_path)
    (directory / "0002_dr_tables.sql").unlink()
    with pytest.raises(MigrationError, match="0002 is missing"):
        migrate.discover(directory)


def test_misnamed_and_duplicate_files_are_refused(tmp_path):
    directory = copy_migrations(tmp_path)
    (directory / f"{next_number()}_Bad Name.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_snake_name"):
        migrate.discover(directory)
    (directory / f"{next_number()}_Bad Name.sql").unlink()
    (directory / "0003_again.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="two migration files"):
        migrate.discover(directory)


def test_database_newer_than_code_is_refused(empty_db_url, tmp_path):
    directory = copy_migrations(tmp_path)
    (directory / f"{next_number()}_extra.sql").write_text("CREATE TABLE extra (id int);")
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        migrate.migrate(conn, migrate.discover(directory))
        with pytest.raises(MigrationError, match="not in migrations/"):
            migrate.migrate(conn, migrate.discover())


def test_a_failing_migration_rolls_back_alone(empty_db_url, tmp_path):
    directory = copy_migrations(tmp_path)
    (directory / f"{next_number()}_broken.sql").write_text("CREATE TABLE half_done (id int);\nSELECT no_such_function();")
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        with pytest.raises(psycopg.Error):
            migrate.migrate(conn, migrate.discover(directory))
        assert [row[0] for row in applied_versions(empty_db_url)] == all_versions()
        assert conn.execute("SELECT to_regclass('half_done')").fetchone()[0] is None


def test_concurrent_runs_are_serialized(empty_db_url):
    results, errors = [], []
    barrier = threading.Barrier(4)

    def run():
        try:
            with psycopg.connect(empty_db_url, autocommit=True) as conn:
                barrier.wait()
                results.append(len(migrate.migrate(conn, migrate.discover())))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(results) == [0, 0, 0, len(migrate.discover())]
    assert [row[0] for row in applied_versions(empty_db_url)] == all_versions()


def test_concurrent_cli_runs(empty_db_url):
    processes = [subprocess.Popen([sys.executable, "dr.py", "migrate"], cwd=ROOT, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env={**os.environ, "ENV_FILE": "/nonexistent/.env", "DATABASE_URL": empty_db_url})
                 for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    assert sum(out.count("applied 0") for out, _ in outputs) == len(migrate.discover())


def _schema_dump(pg_server, dbname: str) -> str:
    result = subprocess.run([pg_server.tool("pg_dump"), "--schema-only", "--no-owner", "--no-privileges",
                             pg_server.url(dbname)], capture_output=True, text=True, check=True)
    # drop comments, blank lines and the per-run \restrict keys of newer pg_dump versions
    return "\n".join(line for line in result.stdout.splitlines()
                     if line.strip() and not line.startswith(("--", "\\restrict", "\\unrestrict")))


def test_migrations_build_exactly_models_sql(pg_server, template_db):
    pg_server.admin("DROP DATABASE IF EXISTS from_models WITH (FORCE)")
    pg_server.admin("CREATE DATABASE from_models")
    try:
        with psycopg.connect(pg_server.url("from_models"), autocommit=True) as conn:
            conn.execute((ROOT / "models.sql").read_text())
        migrated, modelled = _schema_dump(pg_server, template_db), _schema_dump(pg_server, "from_models")
        assert "CREATE TABLE public.schema_migrations" in modelled
        assert migrated == modelled
    finally:
        pg_server.admin("DROP DATABASE IF EXISTS from_models WITH (FORCE)")


def test_seeded_levels_and_settings(conn):
    levels = conn.execute("""SELECT level, min_tokens::text AS lo, max_tokens::text AS hi FROM deposit_levels
                             JOIN deposit_level_versions USING (version) WHERE is_current ORDER BY level""").fetchall()
    assert [(r["level"], r["lo"], r["hi"]) for r in levels] == [(1, "10", "100"), (2, "100", "1000"),
                                                                  (3, "1000", "10000")]
    settings = {r["key"]: r["value"] for r in conn.execute("SELECT key, value FROM system_settings")}
    assert settings["min_withdrawal"] == "1" and settings["withdrawal_fee"] == "0"
    assert "support_contact" in settings


REQUIRED = {"BOT_TOKEN": "123:abc", "TOKEN_ADDRESS": "0x" + "7" * 40, "HOT_WALLET_PRIVATE_KEY": "11" * 32}


@pytest.mark.parametrize("program", ["bot.py", "worker.py"])
def test_programs_refuse_an_unmigrated_database(program, empty_db_url):
    result = run_program([program], empty_db_url, **REQUIRED)
    assert result.returncode not in (0, 2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "python dr.py migrate" in lines[0] and "not fully migrated" in lines[0]


def test_missing_settings_are_reported_before_the_database_is_tried(empty_db_url):
    result = run_program(["bot.py"], empty_db_url)
    assert result.returncode == 2 and "BOT_TOKEN" in result.stderr and "TOKEN_ADDRESS" in result.stderr
    assert "migrate" not in result.stderr


def test_programs_report_an_unreachable_database_in_one_line():
    result = run_program(["bot.py"], "postgresql://bot:hunter22@127.0.0.1:1/nowhere", DB_CONNECT_TIMEOUT_S="1",
                         **REQUIRED)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "cannot reach the database" in result.stderr and "hunter22" not in result.stderr
