"""`cosmo kb` as an operator uses it: a real process, a real database file, real files.

Exit codes of `cosmo kb ingest`: 0 when every file was ingested or unchanged, 1 when some
failed (the others are still ingested, each failure is reported), 2 for bad arguments.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.test_cli import cosmo, env  # noqa: F401  (the `env` fixture)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    (docs / "guides").mkdir(parents=True)
    (docs / "handbook.md").write_text(
        "# Handbook\n\n## Refunds\n\nRefunds are paid within 30 days.\n\n"
        "## Security\n\nTicket SEC-4411 tracks the vault migration.\n"
    )
    (docs / "guides" / "setup.html").write_text(
        "<h1>Setup</h1><p>Install the agent with pip and run cosmo serve.</p>"
    )
    (docs / "plans.csv").write_text("plan,price\nTeam,12\nPro,30\n")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a PDF")
    (docs / "photo.png").write_bytes(b"\x89PNG\r\n")  # unsupported types in a folder: skipped
    (docs / ".hidden.md").write_text("# Hidden\n\nNot ingested.")
    return docs


def test_a_folder_is_ingested_a_bad_file_reported_and_unchanged_files_skipped(env, folder):  # noqa: F811
    assert cosmo(env, "db", "upgrade").returncode == 0

    first = cosmo(env, "kb", "ingest", "handbook", str(folder), "--create")

    assert first.returncode == 1, first.stderr  # one file failed
    assert "failed: broken.pdf: is not a readable PDF" in first.stderr
    assert "3 created, 0 updated, 0 unchanged, 1 failed" in first.stdout
    assert "chunks/s" in first.stdout

    found = cosmo(env, "kb", "search", "handbook", "SEC-4411")
    assert found.returncode == 0, found.stderr
    assert "1. handbook.md > Handbook > Security" in found.stdout
    setup = cosmo(env, "kb", "search", "handbook", "install with pip")
    assert "guides/setup.html > Setup" in setup.stdout

    (folder / "broken.pdf").unlink()
    again = cosmo(env, "kb", "ingest", "handbook", str(folder))
    assert again.returncode == 0, again.stderr
    assert "0 created, 0 updated, 3 unchanged, 0 failed; 0 chunks" in again.stdout

    listed = cosmo(env, "kb", "list")
    assert "handbook" in listed.stdout


def test_bad_arguments_exit_2_and_an_unknown_knowledge_base_exits_1(env, tmp_path):  # noqa: F811
    cosmo(env, "db", "upgrade")
    missing = cosmo(env, "kb", "ingest", "handbook", str(tmp_path / "nope"))
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr

    (tmp_path / "empty").mkdir()
    empty = cosmo(env, "kb", "ingest", "handbook", str(tmp_path / "empty"))
    assert empty.returncode == 2
    assert "no supported files" in empty.stderr

    (tmp_path / "a.txt").write_text("Some text.")
    unknown = cosmo(env, "kb", "ingest", "handbook", str(tmp_path / "a.txt"))
    assert unknown.returncode == 1
    assert "no knowledge base named 'handbook'" in unknown.stderr
