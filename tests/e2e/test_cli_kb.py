"""`cosmo kb` as an operator uses it: a real process, a real database file, real files.

Exit codes of `cosmo kb ingest`: 0 when every file was ingested or unchanged, 1 when some
failed (the others are still ingested, each failure is reported), 2 for bad arguments.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_cli import COSMO, ROOT, cosmo, env  # noqa: F401  (the `env` fixture)


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

    first = cosmo(env, "kb", "ingest", "handbook", str(folder), "--create", cwd=folder)

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
    again = cosmo(env, "kb", "ingest", "handbook", str(folder), cwd=folder)
    assert again.returncode == 0, again.stderr
    assert "0 created, 0 updated, 3 unchanged, 0 failed; 0 chunks" in again.stdout

    listed = cosmo(env, "kb", "list")
    assert "handbook" in listed.stdout


def test_bad_arguments_exit_2_and_an_unknown_knowledge_base_exits_1(env, tmp_path):  # noqa: F811
    cosmo(env, "db", "upgrade")
    missing = cosmo(env, "kb", "ingest", "handbook", str(tmp_path / "nope"), cwd=tmp_path)
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr

    (tmp_path / "empty").mkdir()
    empty = cosmo(env, "kb", "ingest", "handbook", str(tmp_path / "empty"), cwd=tmp_path)
    assert empty.returncode == 2
    assert "no supported files" in empty.stderr

    (tmp_path / "a.txt").write_text("Some text.")
    unknown = cosmo(env, "kb", "ingest", "handbook", str(tmp_path / "a.txt"), cwd=tmp_path)
    assert unknown.returncode == 1
    assert "no knowledge base named 'handbook'" in unknown.stderr


def test_update_then_ingest_again_re_chunks_and_docs_and_rm_manage_documents(env, folder):  # noqa: F811
    (folder / "broken.pdf").unlink()
    cosmo(env, "db", "upgrade")
    cosmo(env, "kb", "ingest", "handbook", str(folder), "--create", cwd=folder)
    before = cosmo(env, "kb", "docs", "handbook")
    assert before.returncode == 0, before.stderr
    assert "guides/setup.html" in before.stdout and "plans.csv" in before.stdout

    nothing = cosmo(env, "kb", "update", "handbook")
    assert nothing.returncode == 2
    assert "nothing to change" in nothing.stderr
    bad = cosmo(env, "kb", "update", "handbook", "--chunk-size", "200", "--chunk-overlap", "150")
    assert bad.returncode == 2
    assert "invalid: --chunk-overlap: chunk_overlap (150) must be at most half" in bad.stderr

    changed = cosmo(
        env, "kb", "update", "handbook", "--chunk-size", "120", "--chunk-overlap", "0",
        "--top-k", "2",
    )  # fmt: skip
    assert changed.returncode == 0, changed.stderr
    assert "chunk_size 800 -> 120" in changed.stdout
    assert "top_k 5 -> 2" in changed.stdout
    assert "3 document(s) keep their old chunks until ingested again" in changed.stdout

    again = cosmo(env, "kb", "ingest", "handbook", str(folder), cwd=folder)
    assert again.returncode == 0, again.stderr
    assert "0 created, 3 updated, 0 unchanged, 0 failed" in again.stdout
    settled = cosmo(env, "kb", "ingest", "handbook", str(folder), cwd=folder)
    assert "0 created, 0 updated, 3 unchanged" in settled.stdout
    listed = cosmo(env, "kb", "list")
    assert "120/0" in listed.stdout

    removed = cosmo(env, "kb", "rm", "handbook", "plans.csv")
    assert removed.returncode == 0, removed.stderr
    assert "plans.csv deleted from handbook" in removed.stdout
    after = cosmo(env, "kb", "docs", "handbook")
    assert "plans.csv" not in after.stdout and "handbook.md" in after.stdout
    missing = cosmo(env, "kb", "rm", "handbook", "plans.csv")
    assert missing.returncode == 1
    assert "no document named 'plans.csv'" in missing.stderr


def test_a_folder_then_its_parent_updates_the_documents_instead_of_duplicating(env, folder):  # noqa: F811
    (folder / "broken.pdf").unlink()
    cosmo(env, "db", "upgrade")
    top = folder.parent
    guides = cosmo(env, "kb", "ingest", "handbook", "docs/guides", "--create", cwd=top)
    assert guides.returncode == 0, guides.stderr
    assert "1 created" in guides.stdout
    parent = cosmo(env, "kb", "ingest", "handbook", "docs", cwd=top)
    assert parent.returncode == 0, parent.stderr
    assert "2 created, 0 updated, 1 unchanged" in parent.stdout
    listed = cosmo(env, "kb", "docs", "handbook").stdout
    assert listed.count("setup.html") == 1 and "docs/guides/setup.html" in listed
    found = cosmo(env, "kb", "search", "handbook", "install with pip").stdout
    assert found.count("setup.html") == 1  # one passage, not one per ingest
    # From elsewhere, the same root names the same documents.
    again = cosmo(env, "kb", "ingest", "handbook", str(folder), "--root", str(top))
    assert "0 created, 0 updated, 3 unchanged" in again.stdout


def test_a_path_outside_the_root_is_refused_with_the_way_out(env, folder):  # noqa: F811
    cosmo(env, "db", "upgrade")
    outside = cosmo(env, "kb", "ingest", "handbook", str(folder), "--create", cwd=folder / "guides")
    assert outside.returncode == 2
    assert "is not under the root" in outside.stderr and "--root" in outside.stderr


AGENT = """
apiVersion: cosmo/v1
personas:
  - name: helper
    role: Support assistant
agents:
  - name: support-bot
    persona: helper
    knowledge_bases: [handbook]
"""


def test_an_agent_needs_its_knowledge_base_and_delete_is_forced_while_used(env, tmp_path):  # noqa: F811
    cosmo(env, "db", "upgrade")
    config = tmp_path / "agent.yaml"
    config.write_text(AGENT)
    unknown = cosmo(env, "apply", "-f", str(config))
    assert unknown.returncode == 1
    assert "agents.0.knowledge_bases.0: no knowledge base 'handbook'" in unknown.stderr
    assert "cosmo kb create handbook" in unknown.stderr

    assert cosmo(env, "kb", "create", "handbook").returncode == 0
    applied = cosmo(env, "apply", "-f", str(config))
    assert applied.returncode == 0, applied.stderr

    refused = cosmo(env, "kb", "delete", "handbook", "--yes")
    assert refused.returncode == 1
    assert "handbook is used by agent(s) support-bot" in refused.stderr
    assert "--force" in refused.stderr
    unasked = subprocess.run(
        [*COSMO, "kb", "delete", "handbook", "--force"],
        env=env, cwd=ROOT, input="y\n", capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert unasked.returncode == 2
    assert "pass --yes" in unasked.stderr

    forced = cosmo(env, "kb", "delete", "handbook", "--force", "--yes")
    assert forced.returncode == 0, forced.stderr
    assert "knowledge base handbook deleted" in forced.stdout
    assert "removed from agent(s) support-bot" in forced.stdout
    assert "handbook" not in cosmo(env, "kb", "list").stdout
    exported = cosmo(env, "agents", "export", "support-bot").stdout
    assert "knowledge_bases: []" in exported
