"""The README tells the truth: its configuration table is the binary's own table, every API
route has its entry, the variables it names exist, and the quick start's `make run` really
generates a key and serves."""
import json
import re
import subprocess

from helpers import BINARY, KEY1, REPO


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


def test_readme_documents_every_api_route():
    """Every /api/v1 operation of openapi.json has its own "### METHOD path" entry in the
    README's API reference."""
    spec = json.loads((REPO / "openapi" / "openapi.json").read_text())
    readme = (REPO / "README.md").read_text()
    headings = set(re.findall(r"^### ([A-Z]+ /\S+)$", readme, re.M))
    for path, ops in spec["paths"].items():
        if not path.startswith("/api/v1/"):
            continue
        for method in ops:
            if method in ("get", "post", "put", "patch", "delete"):
                assert f"{method.upper()} {path}" in headings, \
                    f"README has no '### {method.upper()} {path}' entry"


def test_readme_names_only_real_variables():
    """A variable the README's prose names (ELEVENLABS_*, WEBHOOK_*, RATE_LIMIT_*, ...) is one
    the binary knows: a renamed variable cannot linger in the instructions."""
    table = subprocess.run([BINARY, "--config-markdown"], capture_output=True, text=True,
                           check=True).stdout
    known = set(re.findall(r"^\| `([A-Z_]+)` \|", table, re.M))
    readme = (REPO / "README.md").read_text()
    prefixes = ("ELEVENLABS_", "WEBHOOK_", "RATE_LIMIT_", "API_SECRET", "DATABASE_", "REDIS_",
                "MAX_", "OFFLOAD_", "DOCS_ASSETS", "CORS_", "TRUSTED_")
    named = {n for n in re.findall(r"\b([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)\b", readme)
             if n.startswith(prefixes)}
    unknown = sorted(named - known)
    assert not unknown, f"README names variables the binary does not know: {unknown}"


def _readme_block(containing):
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", readme, re.S)
    found = [b for b in blocks if all(c in b for c in containing)]
    assert len(found) == 1, f"README should have one sh block with {containing}"
    return found[0]


def test_readme_elevenlabs_example_works(make_server):
    """The README's "try it" block for ElevenLabs, run as written (only the host changes):
    sign the fixture with sign.py, post it, read the conversation back."""
    block = _readme_block(("sign.py", "/api/v1/webhook/elevenlabs", "ELEVENLABS_WEBHOOK_SECRET="))
    secret = re.search(r"ELEVENLABS_WEBHOOK_SECRET=(\S+)", block).group(1)
    srv = make_server(env={"ELEVENLABS_WEBHOOK_SECRET": secret})
    script = block.replace("http://localhost:8000", srv.url(""))
    env = {"PATH": "/usr/bin:/bin", "KEY": KEY1}
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    decoder = json.JSONDecoder()
    text, docs = out.stdout.strip(), []
    while text:
        doc, end = decoder.raw_decode(text)
        docs.append(doc)
        text = text[end:].strip()
    assert len(docs) == 2, out.stdout
    posted, got = docs
    assert posted["success"] is True, posted
    assert got["conversationId"] == posted["data"]["conversationId"]
    assert got["emailId"] == "maya.lindqvist@example.com"
    assert got["accountId"] == "acct_4821907"
    assert got["status"] == "completed"
