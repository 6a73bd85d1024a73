"""The one configuration object of the workstation.

Every value is read from the environment (or a `.env` file) by its upper-case name; `.env.example` documents
each one with its default. Import `get_settings()` rather than building `Settings()` yourself, so that the
whole process shares one instance.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # --- runtime mode -------------------------------------------------------------------------------------------
    environment: Literal["development", "production"] = "development"
    log_level: str = "INFO"

    # --- data and storage ---------------------------------------------------------------------------------------
    cxr_data_dir: Path = Field(default=PROJECT_ROOT.parent / "shared" / "datasets")
    var_dir: Path = Field(default=PROJECT_ROOT / "var", description="Root of all files the workstation writes.")
    database_url: str = ""  # empty: SQLite file under var_dir
    image_store_dir: Path | None = None  # None: var_dir / "images"

    # --- model and inference ------------------------------------------------------------------------------------
    model_path: Path = Field(default=PROJECT_ROOT / "models" / "pneumonia.pt")
    nodule_model_path: Path | None = None
    model_architecture: str = "resnet18"  # default for training; serving reads the architecture from the checkpoint
    torch_threads: int = 2
    cache_size: int = 1024
    cache_ttl: int = 3600  # seconds

    # --- experiment tracking (MLflow) -----------------------------------------------------------------------------
    mlflow_tracking_uri: str = ""  # empty: SQLite file var_dir/mlflow.db with artifacts in var_dir/mlartifacts
    mlflow_experiment: str = "cxr-workstation"

    # --- API limits ---------------------------------------------------------------------------------------------
    max_upload_mb: float = 25.0
    batch_max: int = 16
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    ui_port: int = 8501
    backend_url: str = "http://127.0.0.1:8000"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.var_dir / 'cxr.db'}"

    @property
    def resolved_image_store_dir(self) -> Path:
        return self.image_store_dir or self.var_dir / "images"

    @property
    def resolved_mlflow_tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.var_dir / 'mlflow.db'}"

    @property
    def mlflow_artifact_dir(self) -> Path:
        return self.var_dir / "mlartifacts"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
