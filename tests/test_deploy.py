"""docker-compose.yml, validated with what runs here (no Docker engine): structure, pins,
health checks, start order, and env names that the code actually reads."""

import re
from pathlib import Path

import yaml

from indexer.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_health_and_order():
    c = _compose()
    s = c["services"]
    assert set(s) == {"qdrant", "postgres", "migrate", "inforank"}
    major, minor = map(int, re.match(r"qdrant/qdrant:v(\d+)\.(\d+)", s["qdrant"]["image"]).groups())
    assert (major, minor) >= (1, 14)  # formula queries
    for name in ("qdrant", "postgres", "inforank"):
        assert s[name]["healthcheck"]["test"], name
    assert s["migrate"]["command"] == ["alembic", "upgrade", "head"]
    assert s["inforank"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert s["inforank"]["depends_on"]["qdrant"]["condition"] == "service_healthy"
    assert s["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert set(c["volumes"]) == {"qdrant_data", "postgres_data"}


def test_env_names_are_the_ones_the_code_reads():
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\b(INFORANK_[A-Z_]+):", text))
    fields = {f"INFORANK_{k.upper()}" for k in Settings.model_fields}
    assert used and used <= fields, used - fields
    assert "${INFORANK_API_KEY:?" in text and "QDRANT__SERVICE__API_KEY" in text  # keys from the environment


def test_dockerfile_runs_the_service_without_torch():
    df = (ROOT / "Dockerfile").read_text()
    assert "ARG EXTRAS=service" in df and 'inforank", "serve"' in df
    assert "torch" not in df.split("ARG EXTRAS")[1].split("\n")[0]
