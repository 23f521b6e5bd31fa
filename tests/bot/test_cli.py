"""The `consulta` command as a person runs it: a real process, real stdin and stdout."""

from __future__ import annotations

import csv
import fcntl
import io
import json
import logging
import os
import select
import socket
import struct
import subprocess
import sys
import termios
import time
import urllib.request
from pathlib import Path

import pytest

from tests.settings import PG_ADMIN

ROOT = Path(__file__).resolve().parents[2]
CONSULTA = [sys.executable, "-m", "consulta"]


def run(args: list[str], env: dict[str, str], stdin: str = "", timeout: float = 60):
    return subprocess.run(
        CONSULTA + args,
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_"))}
    return {
        **clean,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "SECRET_KEY": "cli-test",
        "MEDIA_DIR": str(tmp_path / "media"),
    }


def test_db_upgrade_creates_the_schema(env: dict[str, str], tmp_path: Path) -> None:
    result = run(["db", "upgrade"], env)
    assert result.returncode == 0, result.stderr
    import sqlite3

    with sqlite3.connect(tmp_path / "cli.db") as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"contacts", "submissions", "answers", "consents", "messages"} <= tables


def test_flows_check_passes_on_the_shipped_flows(env: dict[str, str]) -> None:
    result = run(["flows", "check"], env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_flows_check_reports_file_and_line(env: dict[str, str], tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "id: broken\nversion: 1\ntitle: {es: a, en: b, fr: c}\nstart: one\nstates:\n"
        "  one:\n    type: message\n    text: {es: a, en: b, fr: c}\n    next: nowhere\n",
        encoding="utf-8",
    )
    result = run(["flows", "check", str(broken)], env)
    assert result.returncode == 1
    assert f"{broken}:9:" in result.stdout and "nowhere" in result.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_answers_healthz_and_stops_cleanly(env: dict[str, str]) -> None:
    port = _free_port()
    process = subprocess.Popen(
        [*CONSULTA, "serve"],
        env={**env, "PORT": str(port)},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    assert r.status == 200
                    assert b'"database": "ok"' in r.read()
                break
            except OSError:
                assert process.poll() is None, process.stdout.read()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "serve did not answer within 30 s"
                time.sleep(0.2)
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output


def test_serve_refuses_an_invalid_flow_and_says_why(env: dict[str, str], tmp_path: Path) -> None:
    broken = tmp_path / "flows"
    broken.mkdir()
    (broken / "bad.yaml").write_text(
        "id: bad\nversion: 1\ntitle: {es: a, en: b}\nstart: one\nstates:\n"
        "  one:\n    type: end\n    text: {es: a, en: b, fr: c}\n",
        encoding="utf-8",
    )
    result = run(["serve"], {**env, "FLOWS_PATH": str(broken), "PORT": str(_free_port())})
    assert result.returncode == 1
    assert "bad.yaml:3:" in result.stderr and "fr" in result.stderr


def test_a_bad_setting_is_a_clear_error(env: dict[str, str]) -> None:
    result = run(["serve"], {**env, "PORT": "eighty"})
    assert result.returncode == 2
    assert "PORT must be a whole number" in result.stderr


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_on_postgresql_the_development_secret_key_is_refused(
    env: dict[str, str], command: str
) -> None:
    postgres = {**env, "DATABASE_URL": PG_ADMIN.replace("postgresql://", "postgresql+asyncpg://")}
    for secret in ("", "consulta-dev-secret-change-me"):
        result = run([command], {**postgres, "SECRET_KEY": secret, "PORT": str(_free_port())})
        assert result.returncode == 2, result.stderr
        assert "SECRET_KEY must be set to a long random value" in result.stderr
        assert "Traceback" not in result.stderr


def test_on_sqlite_the_development_secret_key_is_fine(env: dict[str, str]) -> None:
    assert run(["db", "upgrade"], env).returncode == 0
    result = run(["staff", "list"], {**env, "SECRET_KEY": ""})
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["export", "--flow", "priorities", "--format", "csv"],
        ["staff", "list"],
        ["contacts", "show", "+5217744444444"],
    ],
)
def test_admin_commands_do_not_migrate_and_say_so(
    env: dict[str, str], tmp_path: Path, args: list[str]
) -> None:
    result = run(args, env)
    assert result.returncode == 1
    assert "the database is not up to date: run `consulta db upgrade`" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert _tables(tmp_path / "cli.db") == set()
    assert run(["db", "upgrade"], env).returncode == 0
    assert run(["staff", "list"], env).returncode == 0


def test_a_database_migrated_by_a_newer_consulta_is_named(
    env: dict[str, str], tmp_path: Path
) -> None:
    import sqlite3

    assert run(["db", "upgrade"], env).returncode == 0
    with sqlite3.connect(tmp_path / "cli.db") as db:
        db.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    result = run(["staff", "list"], env)
    assert result.returncode == 1
    assert "migrated by a newer Consulta (revision 9999_from_the_future)" in result.stderr


def test_the_worker_waits_for_migrations_instead_of_running_them(
    env: dict[str, str], tmp_path: Path
) -> None:
    process = subprocess.Popen(
        [*CONSULTA, "worker"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    try:
        said = ""
        while "not up to date" not in said:
            line = process.stdout.readline()
            assert line, said  # the worker exited
            said += line
        assert "run `consulta db upgrade`" in said
        assert _tables(tmp_path / "cli.db") == set()
        assert run(["db", "upgrade"], env).returncode == 0
        while "worker started" not in said:
            line = process.stdout.readline()
            assert line, said
            said += line
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, said + output
    assert "Traceback" not in said + output


def _output_until(process: subprocess.Popen[str], said: str, wanted: str) -> str:
    """What `process` printed, read until `wanted` shows (or it exits: a failure)."""
    assert process.stdout is not None
    while wanted not in said:
        line = process.stdout.readline()
        assert line, said  # the process exited
        said += line
    return said


def test_the_worker_serves_its_metrics_and_health_and_logs_json(
    env: dict[str, str], tmp_path: Path
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from consulta.bot.metrics import CONTENT_TYPE

    assert run(["db", "upgrade"], env).returncode == 0
    port = _free_port()
    process = subprocess.Popen(
        [*CONSULTA, "worker"],
        env={**env, "METRICS_PORT": str(port), "LOG_FORMAT": "json"},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        said = _output_until(process, "", "worker started")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert r.status == 200 and json.loads(r.read())["database"] == "ok"
        time.sleep(0.3)  # the supervisor's first look at the queue
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert r.headers["Content-Type"] == CONTENT_TYPE
            text = r.read().decode()
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, said + output
    families = {family.name for family in text_string_to_metric_families(text)}
    assert {"consulta_outbound_queue_depth", "process_cpu_seconds", "python_gc_collections"} <= (
        families
    )
    assert "consulta_outbound_queue_depth 0.0" in text
    lines = [json.loads(line) for line in (said + output).splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines), lines
    assert {"level": "INFO", "logger": "consulta", "message": "worker started"}.items() <= next(
        line for line in lines if line["message"] == "worker started"
    ).items()
    assert any(f"metrics and health on port {port}" == line["message"] for line in lines)


def test_a_worker_whose_metrics_port_is_taken_works_on_and_says_so(env: dict[str, str]) -> None:
    assert run(["db", "upgrade"], env).returncode == 0
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = subprocess.Popen(
            [*CONSULTA, "worker"],
            env={**env, "METRICS_PORT": str(port)},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            said = _output_until(process, "", "worker started")
        finally:
            process.terminate()
            output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, said + output
    assert f"metrics not served: cannot listen on port {port}" in said
    assert "METRICS_PORT" in said and "Traceback" not in said + output


def test_telegram_commands_need_the_bot_first(env: dict[str, str]) -> None:
    result = run(["telegram", "groups", "list"], env)
    assert result.returncode == 2
    assert "set TELEGRAM_BOT_TOKEN and TELEGRAM_WEBHOOK_SECRET first" in result.stderr


def _tables(db: Path) -> set[str]:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


PRIORITIES_ANSWERS = [
    "1",  # consent: yes
    "2",  # age group 18–29
    "1",  # woman
    "Centro",  # neighbourhood
    "1",  # student
    "2",  # public services → which services
    "1,3",  # water, rubbish collection
    "{problem}",
    "2",  # satisfaction
    "/loc 20.1011,-98.7591 Plaza Juárez",
]
THANKS = {"es": "¡Gracias! Tu opinión", "en": "Thank you! Your views", "fr": "Merci ! Votre avis"}
PROBLEMS = {
    "es": "No llega el agua desde el lunes",
    "en": "No water since Monday",
    "fr": "Pas d'eau depuis lundi",
}


def _submissions(db: Path) -> list[tuple[str, str, int]]:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT s.status, s.language, COUNT(a.id) FROM submissions s "
            "JOIN answers a ON a.submission_id = s.id GROUP BY s.id"
        ).fetchall()


@pytest.mark.parametrize("lang", ["es", "en", "fr"])
def test_a_newcomer_completes_the_priorities_survey_in_the_terminal(
    env: dict[str, str], tmp_path: Path, lang: str
) -> None:
    answers = "\n".join(PRIORITIES_ANSWERS).replace("{problem}", PROBLEMS[lang]) + "\n"
    result = run(["chat", "--lang", lang], env, stdin=answers)
    assert result.returncode == 0, result.stderr
    assert THANKS[lang] in result.stdout
    assert "Traceback" not in result.stderr
    assert _submissions(tmp_path / "cli.db") == [("complete", lang, 10)]


def test_the_terminal_asks_for_a_language_when_it_cannot_tell(
    env: dict[str, str], tmp_path: Path
) -> None:
    answers = "3\n" + "\n".join(PRIORITIES_ANSWERS).replace("{problem}", PROBLEMS["fr"]) + "\n"
    result = run(["chat"], env, stdin=answers)
    assert result.returncode == 0, result.stderr
    assert "Elige tu idioma · Choose your language · Choisissez votre langue" in result.stdout
    assert "D'accord, nous continuons en français." in result.stdout
    assert THANKS["fr"] in result.stdout
    assert _submissions(tmp_path / "cli.db") == [("complete", "fr", 10)]


def test_the_terminal_reports_an_unfinished_survey_and_resumes_it(
    env: dict[str, str], tmp_path: Path
) -> None:
    first = run(["chat", "--lang", "es", "--as", "vecina"], env, stdin="1\n2\n1\n")
    assert first.returncode == 0, first.stderr
    # A new process (the old one is gone with its memory): the survey goes on where it was.
    second = run(["chat", "--lang", "es", "--as", "vecina"], env, stdin="1\nCentro\n")
    assert second.returncode == 0, second.stderr
    assert "Tienes una encuesta sin terminar: «Prioridades de tu colonia»" in second.stdout
    assert "¿Cuál es tu ocupación principal?" in second.stdout
    assert _submissions(tmp_path / "cli.db") == [("partial", "es", 4)]


def test_a_killed_chat_process_loses_no_answer(env: dict[str, str], tmp_path: Path) -> None:
    import signal

    process = subprocess.Popen(
        [*CONSULTA, "chat", "--lang", "en", "--as", "neighbour"],
        env=env,
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    assert process.stdin and process.stdout
    try:
        for answer, next_question in [("1", "How old are you?"), ("3", "Which gender")]:
            process.stdin.write(answer + "\n")
            while next_question not in process.stdout.readline():
                pass
    finally:
        process.send_signal(signal.SIGKILL)  # no clean-up, no goodbye
        process.wait(timeout=10)
        process.stdin.close()
        process.stdout.close()
    assert _submissions(tmp_path / "cli.db") == [("partial", "en", 2)]
    again = run(["chat", "--lang", "en", "--as", "neighbour"], env, stdin="1\n2\n")
    assert "You have an unfinished survey" in again.stdout
    assert "Which neighbourhood (colonia) do you live in?" in again.stdout
    assert _submissions(tmp_path / "cli.db") == [("partial", "en", 3)]


def test_export_from_the_command_line(env: dict[str, str], tmp_path: Path) -> None:
    answers = "\n".join(PRIORITIES_ANSWERS).replace("{problem}", PROBLEMS["es"]) + "\n"
    assert run(["chat", "--lang", "es"], env, stdin=answers).returncode == 0
    exported = subprocess.run(
        [*CONSULTA, "export", "--flow", "priorities", "--format", "csv"],
        capture_output=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert exported.returncode == 0, exported.stderr
    text = exported.stdout.decode("utf-8-sig")
    assert text.startswith("submission,contact,flow")
    assert "Agua potable; Recolección de basura" in text and "local" not in text
    xlsx = tmp_path / "priorities.xlsx"
    to_file = run(["export", "--flow", "priorities", "--format", "xlsx", "-o", str(xlsx)], env)
    assert to_file.returncode == 0 and xlsx.read_bytes().startswith(b"PK")
    unknown = run(["export", "--flow", "nope", "--format", "csv"], env)
    assert unknown.returncode == 2 and "no flow 'nope'" in unknown.stderr
    bad_date = run(["export", "--flow", "priorities", "--format", "csv", "--since", "ayer"], env)
    assert bad_date.returncode == 2 and "not a date" in bad_date.stderr


def _two_residents(env: dict[str, str]) -> None:
    answers = "\n".join(PRIORITIES_ANSWERS).replace("{problem}", PROBLEMS["es"]) + "\n"
    for address in ("+5217755555555", "+5217766666666"):
        done = run(["chat", "--lang", "es", "--as", address], env, stdin=answers)
        assert done.returncode == 0, done.stderr


def _in_a_terminal(args: list[str], env: dict[str, str], stdout: Path) -> tuple[int, str]:
    """Run with stderr on a pseudo-terminal, as when a person runs it, and stdout to a file.
    Returns the exit code and all that the terminal showed."""
    controller, terminal = os.openpty()
    try:
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
        with stdout.open("wb") as out:
            process = subprocess.Popen(
                [*CONSULTA, *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=terminal,
                env=env,
                cwd=ROOT,
            )
    finally:
        os.close(terminal)  # the child holds its own copy: EOF comes when it exits
    shown = bytearray()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], deadline - time.monotonic())
            if not ready:
                break
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO on Linux once the last writer has closed the terminal
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(controller)
    try:
        return process.wait(timeout=10), shown.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        process.kill()
        raise


def test_a_long_export_shows_a_progress_bar_in_a_terminal(
    env: dict[str, str], tmp_path: Path
) -> None:
    _two_residents(env)
    csv_file = tmp_path / "priorities.csv"
    args = ["export", "--flow", "priorities", "--format", "csv"]
    code, shown = _in_a_terminal(args, env, csv_file)
    assert code == 0, shown
    assert "exporting" in shown and "2/2" in shown and "100%" in shown
    text = csv_file.read_bytes().decode("utf-8-sig")
    assert text.startswith("submission,contact,flow")
    assert "exporting" not in text and "100%" not in text and "2/2" not in text  # a clean CSV
    assert len(list(csv.DictReader(io.StringIO(text)))) == 2
    # stderr not a terminal (a pipe, a log file): no bar, not even a count.
    piped = run(args, env)
    assert piped.returncode == 0, piped.stderr
    assert "exporting" not in piped.stderr and "2/2" not in piped.stderr
    assert "%|" not in piped.stdout and "exporting" not in piped.stdout


def test_an_admin_exports_contact_details_and_the_log_says_so(
    env: dict[str, str], tmp_path: Path
) -> None:
    _two_residents(env)
    args = ["export", "--flow", "priorities", "--format", "csv"]
    plain = run(args, env)
    assert "5217755555555" not in plain.stdout and "CONTACT DETAILS" not in plain.stderr
    detailed = run([*args, "--with-contacts"], env)
    assert detailed.returncode == 0, detailed.stderr
    header, first, second = detailed.stdout.lstrip("\ufeff").splitlines()[:3]
    assert header.startswith("submission,contact,address,name,flow")
    assert ",'+5217755555555," in first and ",'+5217766666666," in second
    [logged] = [line for line in detailed.stderr.splitlines() if "CONTACT DETAILS" in line]
    assert "WARNING" in logged and "priorities" in logged and "command line" in logged
    assert "5217755555555" not in detailed.stderr and "5217766666666" not in detailed.stderr


def test_contacts_show_and_forget(env: dict[str, str], tmp_path: Path) -> None:
    run(["chat", "--lang", "es", "--as", "+5217744444444"], env, stdin="1\n2\n")
    shown = run(["contacts", "show", "+5217744444444"], env)
    assert shown.returncode == 0 and '"age_group": "18_29"' in shown.stdout
    dry = run(["contacts", "forget", "+5217744444444"], env)
    assert dry.returncode == 1 and "add --yes" in dry.stdout
    done = run(["contacts", "forget", "+5217744444444", "--yes"], env)
    assert done.returncode == 0 and "answers stay, anonymous" in done.stdout
    assert "+5217744444444" not in done.stderr  # the log names the pseudonym only
    gone = run(["contacts", "show", "+5217744444444"], env)
    assert gone.returncode == 1 and "nothing is held" in gone.stderr


def test_logged_database_errors_do_not_quote_row_values() -> None:
    from consulta.bot.cli import PrivateFormatter

    formatter = PrivateFormatter("%(levelname)s %(message)s")
    try:
        raise RuntimeError(
            'duplicate key value violates unique constraint "uq_contacts"\n'
            "DETAIL:  Key (channel, address)=(whatsapp, +5215550001) already exists."
        )
    except RuntimeError:
        record = logging.LogRecord("consulta", logging.ERROR, __file__, 1, "boom", None, None)
        record.exc_info = sys.exc_info()
    line = formatter.format(record)
    assert "unique constraint" in line and "DETAIL" in line
    assert "+5215550001" not in line and "whatsapp, " not in line


def test_broadcasts_from_the_command_line(env: dict[str, str], tmp_path: Path) -> None:
    for who, lang in (("+5217700000001", "es"), ("+5217700000002", "en")):
        run(["chat", "--lang", lang, "--as", who], env, stdin="1\n")  # consent: yes
    dry = run(["broadcast", "create", "--flow", "report", "--dry-run"], env)
    assert dry.returncode == 0, dry.stderr
    assert "terminal" in dry.stdout and "total        2" in dry.stdout
    assert "changed nothing" in dry.stdout

    missing = run(["broadcast", "create", "--text-es", "Hola", "--channel", "sms"], env)
    assert missing.returncode == 0  # nobody on SMS: no language is needed
    refused = run(["broadcast", "create", "--text-es", "Hola"], env)
    assert refused.returncode == 1 and "no text in en" in refused.stderr
    unknown = run(["broadcast", "create", "--flow", "nope"], env)
    assert unknown.returncode == 1 and "no flow 'nope'" in unknown.stderr
    past = run(["broadcast", "create", "--flow", "report", "--at", "2020-01-01T10:00"], env)
    assert past.returncode == 1 and "in the past" in past.stderr
    bad_where = run(["broadcast", "create", "--flow", "report", "--where", "colour=red"], env)
    assert bad_where.returncode == 1 and "colour" in bad_where.stderr

    message = tmp_path / "assembly.yaml"
    message.write_text("es: Asamblea mañana\nen: Assembly tomorrow\nfr: Assemblée demain\n")
    created = run(
        ["broadcast", "create", "--message", str(message), "--at", "2099-01-01T10:00"], env
    )
    assert created.returncode == 0, created.stderr
    assert "2 recipients" in created.stdout
    broadcast_id = created.stdout.split()[1].rstrip(":")
    listed = run(["broadcast", "list"], env)
    assert f"{broadcast_id}\tscheduled\tmessage\t2 recipients" in listed.stdout
    assert run(["broadcast", "pause", broadcast_id], env).stdout.strip().endswith("paused")
    again = run(["broadcast", "pause", broadcast_id], env)
    assert again.returncode == 1 and "paused" in again.stderr
    assert run(["broadcast", "resume", broadcast_id], env).returncode == 0
    twice = run(["broadcast", "resume", broadcast_id], env)
    assert twice.returncode == 1 and "not paused" in twice.stderr
    assert run(["broadcast", "cancel", broadcast_id], env).returncode == 0
    shown = run(["broadcast", "show", broadcast_id], env)
    assert shown.returncode == 0 and "cancelled" in shown.stdout and "funnel" in shown.stdout
    nothing = run(["broadcast", "show", "999"], env)
    assert nothing.returncode == 1 and "no broadcast 999" in nothing.stderr
