"""The vit-perception command: every subcommand has --help, unknown ones fail clearly."""

import subprocess
import sys

import pytest

from vit_perception.cli import SUBCOMMANDS, build_parser


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([name, "--help"])
    assert exc.value.code == 0
    assert name in capsys.readouterr().out


def test_unknown_subcommand_fails():
    proc = subprocess.run([sys.executable, "-m", "vit_perception", "nope"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr
