"""The README tells the truth: its configuration table is the binary's own table, and the
quick start's `make run` really generates a key and serves."""
import re
import subprocess

from helpers import BINARY, REPO


def test_readme_config_table_matches_binary():
    table = subprocess.run([BINARY, "--config-markdown"], capture_output=True, text=True,
                           check=True).stdout.strip()
    readme = (REPO / "README.md").read_text()
    m = re.search(r"<!-- config-table:start[^\n]*-->\n(.*?)\n<!-- config-table:end -->", readme,
                  re.S)
    assert m, "README.md lost its config-table markers"
    assert m.group(1).strip() == table, "README config table drifted: run `make readme-config`"


def test_help_lists_every_variable_of_the_readme_table():
    help_text = subprocess.run([BINARY, "--help"], capture_output=True, text=True,
                               check=True).stdout
    readme = (REPO / "README.md").read_text()
    for name in re.findall(r"^\| `([A-Z_]+)` \|", readme, re.M):
        assert name in help_text, f"--help does not mention {name}"


def test_ensure_key_generates_once_and_keeps_it(tmp_path):
    """`make run` on a machine with no key writes a fresh one into .env and prints it once."""
    script = REPO / "scripts" / "ensure-key.sh"
    (tmp_path / "gensendrep").symlink_to(BINARY)
    env = {"PATH": "/usr/bin:/bin"}
    first = subprocess.run([str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                           check=True)
    dotenv = (tmp_path / ".env").read_text()
    m = re.fullmatch(r"API_SECRET_KEY=([0-9a-f]{64})\n", dotenv)
    assert m, dotenv
    assert m.group(1) in first.stdout
    assert (tmp_path / ".env").stat().st_mode & 0o077 == 0, ".env must not be world-readable"
    second = subprocess.run([str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            check=True)
    assert second.stdout == ""
    assert (tmp_path / ".env").read_text() == dotenv
