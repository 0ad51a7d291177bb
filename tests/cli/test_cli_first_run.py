"""What a new user meets first: read-only commands in a folder with no database, and the demo's
advice on what to type next."""

from __future__ import annotations

import pytest

from digest.cli.demo import command_name


@pytest.mark.parametrize("args", [["preview"], ["status"], ["comparisons", "list"]])
def test_read_only_commands_in_an_empty_folder_say_so_and_create_nothing(cli, env, tmp_path,
                                                                         monkeypatch, args):
    folder = tmp_path / "empty"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setenv("DIGEST_DATABASE_URL", "sqlite:///./digest.db")
    from digest.cli import common

    common.reset()
    result = cli(*args)
    assert result.exit_code != 0
    assert "no database here" in result.err and "run `digest init`" in result.err
    assert list(folder.iterdir()) == []


def test_next_commands_name_the_script_when_it_is_not_on_path(tmp_path, monkeypatch):
    script = tmp_path / ".venv" / "bin" / "digest"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    monkeypatch.chdir(tmp_path)
    assert command_name(str(script), path_lookup=lambda _: None) == ".venv/bin/digest"
    assert command_name(str(script), path_lookup=lambda _: "/usr/bin/digest") == ".venv/bin/digest"
    assert command_name(str(script), path_lookup=lambda _: str(script)) == "digest"
