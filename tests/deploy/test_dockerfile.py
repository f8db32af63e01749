"""deploy/Dockerfile, .dockerignore and the console script agree with each
other and with the manifests. No Docker engine: the files are parsed."""

from __future__ import annotations

import re
import tomllib

import pytest

from tests.deploy import dockerfile
from tests.deploy.cli_commands import subcommands
from tests.deploy.manifests import OVERLAYS, ROOT, render

DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
JOURNAL_DIR = "/var/lib/hqstream/journal"
BUILD_TOOLS = re.compile(r"\b(build-essential|gcc|g\+\+|make|cmake|clang|\S+-dev)\b")


@pytest.fixture(scope="module")
def parsed() -> tuple[dict[str, str], list[dockerfile.Stage]]:
    return dockerfile.stages(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final(parsed: tuple[dict[str, str], list[dockerfile.Stage]]) -> dockerfile.Stage:
    return parsed[1][-1]


def _scripts() -> dict[str, str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    scripts: dict[str, str] = pyproject["project"]["scripts"]
    return scripts


def test_multi_stage_with_pinned_bases(
    parsed: tuple[dict[str, str], list[dockerfile.Stage]],
) -> None:
    _args, stages = parsed
    assert len(stages) >= 2
    for stage in stages:
        if stage.image in {s.name for s in stages}:
            continue  # FROM an earlier stage
        # An exact version tag (e.g. python:3.11.11-slim-bookworm), never a moving one.
        assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?", stage.image), (
            stage.image
        )


def test_entrypoint_is_the_console_script(final: dockerfile.Stage) -> None:
    entrypoint = dockerfile.exec_form(final.last("ENTRYPOINT") or "null")
    assert entrypoint == ["hqstream"]
    assert _scripts() == {"hqstream": "hqstream.cli:app"}


def test_cmd_picks_a_real_component(final: dockerfile.Stage) -> None:
    cmd = dockerfile.exec_form(final.last("CMD") or "null")
    commands, imported = subcommands()
    assert cmd[0] in commands
    assert cmd[0] in {"gateway", "produce", "streams", "simulate"}
    options = commands[cmd[0]]
    if imported and options is not None:
        for arg in cmd[1:]:
            if arg.startswith("--"):
                assert arg in options, f"hqstream {cmd[0]} has no option {arg}"


def test_final_stage_runs_as_a_numeric_non_root_user(final: dockerfile.Stage) -> None:
    user = final.last("USER")
    assert user is not None
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) >= 10000
    assert not gid or gid.isdigit()
    assert f"--uid {uid}" in " ".join(final.all("RUN"))


def test_final_stage_installs_wheels_only(final: dockerfile.Stage) -> None:
    runs = " ".join(final.all("RUN"))
    assert "--no-index" in runs and "--find-links=/wheels" in runs
    assert "from=builder" in runs
    assert not BUILD_TOOLS.search(runs), "build tools in the final stage"
    assert "apt-get install" not in runs
    for copy in final.all("COPY"):
        assert copy.startswith("--from="), f"source copied into the final stage: COPY {copy}"


def test_builder_builds_the_wheels(
    parsed: tuple[dict[str, str], list[dockerfile.Stage]],
) -> None:
    builder = parsed[1][0]
    assert builder.name == "builder"
    runs = " ".join(builder.all("RUN"))
    assert "pip wheel" in runs and "/wheels" in runs


def test_runtime_environment(final: dockerfile.Stage) -> None:
    env: dict[str, str] = {}
    for args in final.all("ENV"):
        env |= dockerfile.env_pairs(args)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    volumes = " ".join(final.all("VOLUME"))
    assert JOURNAL_DIR in volumes


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_journal_volume_is_where_the_producer_writes(name: str) -> None:
    producer = render(f"overlays/{name}").get("Deployment", "hqstream-producer")
    (c,) = producer["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["HQ_JOURNAL_DIR"] == JOURNAL_DIR
    assert JOURNAL_DIR in {m["mountPath"] for m in c["volumeMounts"]}


@pytest.mark.parametrize("name", OVERLAYS)
def test_manifest_commands_are_real_subcommands(name: str) -> None:
    commands, imported = subcommands()
    rendered = render(f"overlays/{name}")
    used = set()
    for workload, _pod, c in rendered.containers():
        if not re.search(r"(^|/)hqstream:", c["image"]):
            continue
        assert "command" not in c, "keep the image's ENTRYPOINT (hqstream)"
        args = c["args"]
        assert args[0] in commands, f"{workload['metadata']['name']}: no subcommand {args[0]}"
        used.add(args[0])
        options = commands[args[0]]
        if imported and options is not None:
            for arg in args[1:]:
                if arg.startswith("--"):
                    assert arg in options, f"hqstream {args[0]} has no option {arg}"
    assert {"produce", "streams", "gateway"} <= used


def test_dockerignore_sends_the_packages_and_nothing_else() -> None:
    rules = dockerfile.ignore_rules(DOCKERIGNORE.read_text())
    files = dockerfile.context_files(ROOT, rules)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    assert "pyproject.toml" in files
    for package in packages:
        sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / package).rglob("*.py")}
        sources = {s for s in sources if "__pycache__" not in s}
        assert sources and sources <= files, f"{package} sources missing from the context"
    for package, globs in pyproject["tool"]["setuptools"]["package-data"].items():
        for glob in globs:
            data = {p.relative_to(ROOT).as_posix() for p in (ROOT / package).glob(glob)}
            assert data <= files, f"package data {package}/{glob} missing from the context"
    leaked = {f for f in files if f.split("/")[0] in {"tests", "docs", "deploy", ".run", ".git"}}
    assert leaked == {"deploy/requirements.lock"}, "only the lock file of deploy/"
    assert not {f for f in files if "__pycache__" in f or f.endswith(".pyc")}
    assert not {f for f in files if f == ".env" or f.endswith("/.env")}


def test_dockerignore_evaluation_follows_docker_rules() -> None:
    rules = dockerfile.ignore_rules("*\n!pkg/\n**/__pycache__\n")
    assert dockerfile.in_context("pkg/mod.py", rules)
    assert dockerfile.in_context("pkg/sub/mod.py", rules)
    assert not dockerfile.in_context("pkg/__pycache__/mod.pyc", rules)
    assert not dockerfile.in_context("other/mod.py", rules)
    assert not dockerfile.in_context("top.txt", rules)


def test_license_file_and_a_setuptools_that_reads_the_license_expression() -> None:
    from tests.deploy.manifests import ROOT

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    requires = project["build-system"]["requires"]
    (setuptools,) = [r for r in requires if r.startswith("setuptools")]
    minimum = re.fullmatch(r"setuptools>=(\d+)(?:\.\d+)*", setuptools)
    assert minimum and int(minimum.group(1)) >= 77, setuptools


def test_dependencies_are_locked_with_hashes() -> None:
    """The image installs deploy/requirements.lock (pinned, hashed), which covers
    every dependency of pyproject.toml."""
    from tests.deploy.manifests import ROOT

    lock = (ROOT / "deploy" / "requirements.lock").read_text()
    pinned = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^\s\\]+)", lock, re.MULTILINE))
    normalized = {re.sub(r"[-_.]+", "-", name).lower() for name in pinned}
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        name = re.split(r"[\[<>=!~;\s]", dep, maxsplit=1)[0]
        assert re.sub(r"[-_.]+", "-", name).lower() in normalized, dep
    blocks = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", lock.split("\n\n", 1)[1])
    assert all("--hash=sha256:" in block for block in blocks if "==" in block)
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "--require-hashes" in dockerfile and "requirements.lock" in dockerfile
    assert "!deploy/requirements.lock" in (ROOT / ".dockerignore").read_text()


def test_the_image_carries_the_compiled_parse(
    parsed: tuple[dict[str, str], list[dockerfile.Stage]],
) -> None:
    """The builder builds native/ into a wheel with a pinned Rust; the runtime installs
    it from the wheels (the workers would fall back to pure Python without it)."""
    builder, final = parsed[1][0], parsed[1][-1]
    builder_runs = " ".join(builder.all("RUN"))
    assert "pip wheel --no-deps --wheel-dir /wheels ./native" in builder_runs
    assert "--default-toolchain ${RUST_VERSION}" in builder_runs
    assert "hqstream-native" in " ".join(final.all("RUN"))
    rules = dockerfile.ignore_rules(DOCKERIGNORE.read_text())
    assert dockerfile.in_context("native/src/lib.rs", rules)
    assert dockerfile.in_context("native/Cargo.lock", rules)
    assert not dockerfile.in_context("native/target/release/libhqstream_native.so", rules)
