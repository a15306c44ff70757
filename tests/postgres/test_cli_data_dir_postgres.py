"""With the store on PostgreSQL, a command still refuses a data dir holding no install.

The data dir then holds the install's secrets; a command pointed at a wrong one
must not create fresh secrets and act on the real database with them.
"""

from __future__ import annotations

from pathlib import Path

from support_cli import cli, cli_ok


def test_a_missing_data_dir_is_refused_even_with_a_database_url(
    postgres_url: str, tmp_path: Path
) -> None:
    cli_ok("init", "--data-dir", str(tmp_path / "install"), "--database-url", postgres_url)
    wrong = tmp_path / "typo"

    listing = cli("tenants", "list", "--data-dir", str(wrong), "--database-url", postgres_url)
    rotation = cli("kms", "rotate", "--data-dir", str(wrong), "--database-url", postgres_url)

    for result in (listing, rotation):
        assert result.returncode == 1, result.stderr
        assert "no Strongroom data" in result.stderr
    assert not wrong.exists(), "secrets were created in the wrong data dir"
    right = cli(
        "tenants", "list", "--data-dir", str(tmp_path / "install"), "--database-url", postgres_url
    )
    assert right.returncode == 0, right.stderr
