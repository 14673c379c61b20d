"""Environment configuration, read only by the CLI and the HTTP service (the edges)."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from indexer.store.factory import QdrantLocation


class Settings(BaseSettings):
    """``INFORANK_*`` variables. With none set, everything is embedded under ``./data``."""

    model_config = SettingsConfigDict(env_prefix="INFORANK_", extra="ignore")

    data_dir: Path = Path("data")
    database_url: str | None = None
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    api_key: str | None = None
    url: str | None = None  # INFORANK_URL: the CLI's reads go to a running `inforank serve`

    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(self.data_dir / 'inforank.sqlite').resolve()}"

    def qdrant(self) -> QdrantLocation:
        if self.qdrant_url:
            return QdrantLocation(url=self.qdrant_url, api_key=self.qdrant_api_key)
        return QdrantLocation(edge_path=str((self.data_dir / "qdrant").resolve()))
