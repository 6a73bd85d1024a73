"""The one configuration object of the workstation.

Every value is read from the environment (or a `.env` file) by its upper-case name; `.env.example` documents
each one with its default. Import `get_settings()` rather than building `Settings()` yourself, so that the
whole process shares one instance.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent
DEFAULT_NODULE_MODEL_PATH = PROJECT_ROOT / "models" / "nodule.pt"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # --- runtime mode -------------------------------------------------------------------------------------------
    environment: Literal["development", "production"] = "development"
    log_level: str = "INFO"
    # JSON lines to stdout and to LOG_DIR/cxr.log, rotated at LOG_FILE_MAX_MB with LOG_FILE_BACKUPS old files kept.
    log_dir: Path | None = None  # None: var_dir / "logs"
    log_file_max_mb: float = Field(default=10.0, gt=0)
    log_file_backups: int = Field(default=5, ge=0)

    # --- data and storage ---------------------------------------------------------------------------------------
    cxr_data_dir: Path = Field(default=PROJECT_ROOT.parent / "shared" / "datasets")
    var_dir: Path = Field(default=PROJECT_ROOT / "var", description="Root of all files the workstation writes.")
    database_url: str = ""  # empty: SQLite file under var_dir
    image_store_dir: Path | None = None  # None: var_dir / "images"
    # Stored images and case files with no committed case (left by a crash mid-study) are removed once older than
    # ORPHAN_GRACE_S, at start and every ORPHAN_SWEEP_INTERVAL_S (0: only at start).
    orphan_grace_s: int = Field(default=3600, ge=60)
    orphan_sweep_interval_s: int = Field(default=3600, ge=0)
    # Fernet key for patient fields at rest; empty in development: generated once into var_dir/phi.key (0600).
    # Production refuses to start without it. Generate one with `python -m storage generate-phi-key`.
    phi_encryption_key: SecretStr = SecretStr("")
    # Comma-separated previous keys, still accepted for reading while `python -m storage rotate-phi-key` runs.
    phi_encryption_old_keys: SecretStr = SecretStr("")

    # --- model and inference ------------------------------------------------------------------------------------
    model_path: Path = Field(default=PROJECT_ROOT / "models" / "pneumonia.pt")
    # Registry reference served instead of model_path when set, e.g. "models:/cxr-pneumonia@champion"
    # (resolved by mlops.registry.resolve_model_reference against the MLflow tracking URI below). Unset: the local
    # registry's champion of cxr-pneumonia when it has one, else MODEL_PATH (see "model operations" below).
    model_alias: str = ""
    # The nodule/mass model (issue 23), served beside pneumonia when this file exists (the default path may be
    # absent: then no nodule model is served); empty: none. A checkpoint whose test AUROC (metrics.test.auroc) is
    # missing or below NODULE_MIN_TEST_AUROC is refused, and /ready and /model/info?task=nodule say why.
    nodule_model_path: Path | None = Field(default=DEFAULT_NODULE_MODEL_PATH)
    nodule_min_test_auroc: float = Field(default=0.65, ge=0, le=1)
    model_architecture: str = "resnet18"  # default for training; serving reads the architecture from the checkpoint
    torch_threads: int = 2
    cache_size: int = 1024
    cache_ttl: int = 3600  # seconds
    # Serving performance (inference/runtimes.py, inference/batching.py; measured by bench/load.py). The runtime that
    # runs the classifier: torch, or the checkpoint's ONNX export on onnxruntime or openvino (exported on first load
    # into RUNTIME_CACHE_DIR, keyed by version and weights sha). int8 needs onnxruntime/openvino and is made ahead by
    # `python -m mlops.export_runtime --int8`. Grad-CAM and the MC-dropout head always stay on torch.
    inference_runtime: Literal["torch", "onnxruntime", "openvino"] = "torch"
    inference_precision: Literal["fp32", "int8"] = "fp32"
    runtime_cache_dir: Path | None = None  # None: var_dir / "runtimes"
    # Micro-batching: concurrent requests share one model pass of up to MAX_BATCH_SIZE images, collected for at most
    # BATCH_WAIT_MS after the first one waits (a lone request waits that long at most).
    enable_batching: bool = True
    max_batch_size: int = Field(default=32, ge=1)
    batch_wait_ms: float = Field(default=2.0, ge=0)

    # --- heatmaps, uncertainty, input gate (inference/explain.py, uncertainty.py, ood.py) -------------------------
    heatmap_method: Literal["gradcam", "gradcam++"] = "gradcam"
    heatmap_colormap: str = "jet"  # jet, turbo, inferno, magma, viridis, plasma, hot
    heatmap_opacity: float = 0.4
    uncertainty_method: Literal["mc_dropout", "tta", "none"] = "mc_dropout"
    uncertainty_passes: int = 20
    uncertainty_seed: int = 0  # fixed masks/augmentations: the same image always gets the same uncertainty
    # Uncertain-case policy: uncertain (-> annotation queue) when the input gate says OOD, or calibrated confidence
    # < CONFIDENCE_THRESHOLD, or normalized predictive entropy > ENTROPY_THRESHOLD, or the std of the positive-class
    # probability over the passes > UNCERTAINTY_STD_THRESHOLD.
    confidence_threshold: float = 0.8
    entropy_threshold: float = 0.8
    uncertainty_std_threshold: float = 0.15
    # Input gate. The embedding-distance threshold is fitted per model and stored in the checkpoint
    # (`python -m mlops.fit_gate`); these are the fit default and the plain image checks.
    ood_enabled: bool = True
    ood_percentile: float = 99.5  # held-out training percentile used as the distance threshold by `fit`
    ood_max_aspect_ratio: float = 2.0  # chest radiographs are ~0.8-1.25; beyond this it is not a chest film
    ood_min_dynamic_range: float = 0.08  # 1st-99th percentile spread of [0, 1] pixels; below it: near-constant
    ood_min_orientation_score: float = 0.0  # vertical mediastinal band minus horizontal band brightness
    ood_flip_screen: float = 0.03  # bottom-minus-top brightness below which the upside-down test runs
    ood_flip_margin: float = 1.0  # upside down when the 180-degree turned image is this much closer in distance

    # --- similar-case retrieval (case_retrieval/; thresholds measured by bench/retrieval.py) -----------------------
    retrieval_index_dir: Path | None = None  # None: var_dir / "retrieval"
    retrieval_flat_max_entries: int = 20_000  # exact IndexFlatIP up to this many entries, HNSW beyond
    retrieval_hnsw_m: int = 32  # graph degree of the HNSW index
    retrieval_hnsw_ef_construction: int = 80
    retrieval_hnsw_ef_search: int = 128  # search breadth: higher is more exact and slower
    retrieval_thumbnail_px: int = 128  # longest side of the stored thumbnail PNG

    # --- experiment tracking (MLflow) -----------------------------------------------------------------------------
    mlflow_tracking_uri: str = ""  # empty: SQLite file var_dir/mlflow.db with artifacts in var_dir/mlartifacts
    mlflow_experiment: str = "cxr-workstation"

    # --- API limits ---------------------------------------------------------------------------------------------
    max_upload_mb: float = 25.0
    batch_max: int = 64  # images in one POST /predict/batch (they run as model batches of MAX_BATCH_SIZE)
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    ui_port: int = 8501
    backend_url: str = "http://127.0.0.1:8000"

    # --- security (api/auth.py, api/security.py, api/permissions.py) ---------------------------------------------
    # First admin, created at start when no account has this username (only then: later changes need the CLI,
    # `python -m api.admin reset-password`). Without both, `scripts/run.sh` creates one and prints its password once.
    admin_username: str = ""
    admin_password: SecretStr = SecretStr("")
    # HMAC key of the login tokens (HS256, >= 32 characters). Empty in development: generated once into
    # var_dir/jwt.secret (0600). Production refuses to start without it.
    jwt_secret: SecretStr = SecretStr("")
    token_ttl_minutes: int = Field(default=60, ge=1, le=7 * 24 * 60)
    cors_origins: str = ""  # comma-separated exact origins allowed to call the API from a browser; empty: none
    # Off only for load tests and private deployments: RATE_LIMIT is then not enforced (the login backoff still is).
    rate_limit_enabled: bool = True
    rate_limit: str = "300/minute"  # per user or API key (anonymous callers: per client address), e.g. "20/second"
    # Failed logins per client address and username, then per username from any address, before each further failure
    # makes the next attempt wait twice as long (1 s, 2 s, 4 s ... up to LOGIN_BACKOFF_MAX_S; 429 with Retry-After).
    login_rate_limit: str = "10/15 minutes"
    login_account_rate_limit: str = "30/15 minutes"
    login_backoff_max_s: int = Field(default=60, ge=1, le=3600)
    # Comma-separated addresses or networks (CIDR) of reverse proxies whose X-Forwarded-For is believed; empty: none,
    # the client is the connecting address. Start uvicorn with --no-proxy-headers (scripts/run.sh does).
    trusted_proxies: str = ""
    rate_limit_storage_uri: str = "memory://"  # `limits` storage; e.g. redis://host:6379 shared by several replicas
    request_timeout_s: float = Field(default=60.0, ge=0)  # 0 disables; a request still running then gets 504
    max_json_bytes: int = Field(default=256 * 1024, ge=1024)  # a JSON body or field (not /predict/batch) beyond: 422
    max_json_depth: int = Field(default=32, ge=2, le=256)  # nesting of arrays and objects in any JSON input beyond: 422

    # --- monitoring (monitoring/, api/observability.py, api/routers/monitoring.py) ---------------------------------
    # GET /metrics answers anonymous callers on this machine (loopback, no proxy headers); everyone else needs a token
    # or API key. Turn off when a proxy on this machine relays outside traffic without X-Forwarded-For.
    # Several workers: export PROMETHEUS_MULTIPROC_DIR (an empty folder) before start; see monitoring/metrics.py.
    metrics_loopback_anonymous: bool = True
    disk_min_free_gb: float = Field(default=1.0, ge=0)  # /ready fails (503) below this much free space under VAR_DIR
    # HMAC key of the audit trail's hash chain (python -m monitoring.audit verify needs the same one). Empty:
    # generated once into var_dir/audit.key (0600). Keep a copy apart from the database: whoever holds both can forge.
    audit_key: SecretStr = SecretStr("")
    # Request and prediction history behind GET /v1/monitoring/summary: written every MONITORING_FLUSH_INTERVAL_S
    # (seconds), rows older than MONITORING_RETENTION_DAYS deleted (keep it above the longest window, 7 days).
    monitoring_flush_interval_s: float = Field(default=5.0, ge=0)
    monitoring_retention_days: float = Field(default=8.0, gt=0)

    # --- alerts (monitoring/alerts.py, monitoring/alert_channels.py) ----------------------------------------------
    alert_interval_s: float = Field(default=60.0, ge=0)  # seconds between rule evaluations; 0: no scheduler
    alert_cooldown_s: float = Field(default=900.0, ge=0)  # quiet reopening after a resolve; reminder interval
    alert_retries: int = Field(default=3, ge=0)  # further attempts per channel after a failed send
    alert_backoff_s: float = Field(default=2.0, ge=0)  # wait before the first retry, doubled before each next one
    alert_min_expert_accuracy: float = 0.8  # accuracy on expert-labelled feedback below this fires
    alert_min_expert_labels: int = 20  # fewer expert labels: the accuracy rule reports "no data"
    alert_p95_latency_s: float = 2.0  # p95 request latency over the last hour above this fires
    alert_error_rate: float = 0.05  # share of 5xx answers over the last hour above this fires
    alert_min_requests: int = 20  # fewer requests in the hour: latency and error-rate rules report "no data"
    alert_cpu_percent: float = 95.0
    alert_memory_percent: float = 90.0
    alert_disk_percent: float = 90.0  # of the disk holding VAR_DIR
    # Channels: each one is on when its settings are filled in.
    alert_webhook_url: str = ""  # generic webhook: the alert as JSON
    alert_slack_webhook_url: str = ""  # Slack-compatible incoming webhook ({"text": ...})
    alert_smtp_host: str = ""
    alert_smtp_port: int = 25
    alert_smtp_from: str = "cxr-workstation@localhost"
    alert_smtp_to: str = ""  # comma-separated recipients
    alert_smtp_username: str = ""
    alert_smtp_password: SecretStr = SecretStr("")
    alert_smtp_starttls: bool = False

    # --- input drift (monitoring/drift.py, api/drift.py) -------------------------------------------------------------
    # Films like the served model's training data; None: CXR_DATA_DIR/kermany-pneumonia/train.
    drift_baseline_dir: Path | None = None
    drift_baseline_size: int = Field(default=300, ge=10)  # baseline films sampled (the same ones every time)
    drift_window: int = Field(default=200, ge=10, le=1000)  # most recent cases compared by default
    drift_min_cases: int = Field(default=30, ge=2)  # fewer recent cases: "no data"
    drift_alpha: float = Field(default=0.05, gt=0, lt=1)  # family-wise false-alarm rate (Bonferroni over the tests)
    drift_check_interval_s: float = Field(default=3600.0, ge=0)  # how often the alert rule re-runs the check

    # --- learning loop (active_learning/, mlops/retrain.py; issue 14) ------------------------------------------------
    # Order of the annotation queue: uncertainty (entropy / MC-dropout mutual information, then waiting time),
    # margin, random, or diversity (uncertain first, no two picks of a batch closer than ACTIVE_LEARNING_MIN_DISTANCE
    # in the model's embedding space, cosine distance). The default is what bench/active_learning.py measured best:
    # diversity at 0.03 reached random's 400-label AUROC with 40 labels (uncertainty alone: 240).
    active_learning_strategy: Literal["uncertainty", "margin", "random", "diversity"] = "diversity"
    active_learning_min_distance: float = Field(default=0.03, ge=0, le=2)
    active_learning_batch_size: int = Field(default=20, ge=1, le=500)  # picks ranked together (diversity)
    active_learning_seed: int = 0  # the random strategy's seed
    # A claim is a lock on one case for one annotator; it lapses after CLAIM_TTL_S unless renewed while working.
    claim_ttl_s: int = Field(default=900, ge=10, le=86400)
    reads_per_case: int = Field(default=2, ge=1, le=5)  # independent expert reads before a label is final
    # Show the model's finding and heatmap to annotators before they submit (False: blind reading).
    show_ai_to_annotators: bool = False
    # Share of final expert labels held back (by patient) to judge challengers; assigned once, never reshuffled.
    expert_holdout_fraction: float = Field(default=0.3, gt=0, lt=1)
    # A retraining job starts by itself once this many new final labels exist since the last job (0: only by hand).
    retrain_min_new_labels: int = Field(default=50, ge=0)
    retrain_check_interval_s: float = Field(default=60.0, ge=0)  # how often the backend looks for that (0: never)
    # Promotion gate: the challenger may lose at most this much AUROC on the fixed test split, and nothing on the
    # held-back expert labels.
    retrain_test_tolerance: float = Field(default=0.005, ge=0, le=0.2)
    retrain_heartbeat_s: float = Field(default=10.0, gt=0)  # a running job older than 6 beats is taken over
    retrain_max_reference_images: int = Field(default=2000, ge=50)  # training-data films per retrain (feature cache)
    # Films of the fixed test split the gate judges on: 0, the whole split (keep it so in production: a subset makes
    # the comparison noisier); > 0, a balanced seeded subset (quick checks, tests).
    retrain_max_test_images: int = Field(default=0, ge=0)

    # --- backups (storage/backup.py; issue 18) -------------------------------------------------------------------
    # `python -m storage backup` without --out writes cxr-backup-<UTC time>.tar here, then deletes all but the newest
    # BACKUP_KEEP backups in this folder (0: delete none). A backup holds the key files only with --include-keys.
    backup_dir: Path | None = None  # None: var_dir / "backups"
    backup_keep: int = Field(default=7, ge=0)

    # --- model operations (issue 18; mlops/registry.py, api/services.py, api/routers/models.py) --------------------
    # What the backend serves: MODEL_ALIAS when set; otherwise the registry's `champion` of cxr-<task> when the
    # local MLflow registry has one (the learning loop registers the serving model as champion on its first retrain
    # and moves the alias on promotion, so a restart keeps serving the promoted model); otherwise MODEL_PATH.
    # Every MODEL_ALIAS_POLL_S seconds each backend process reads that alias and swaps to the version it points at
    # (loaded and warmed before it takes traffic): a promotion made through one replica reaches all of them.
    # 0: no polling (the alias is read at start and on this process's own promotions and rollbacks).
    model_alias_poll_s: float = Field(default=5.0, ge=0)

    # --- PDF reports (reports/; build a reports.ReportContext from these) ---------------------------------------
    institution_name: str = "CXR Workstation"  # printed in every report header
    institution_logo_path: Path | None = None  # PNG/JPEG; unset or unreadable: reports print without a logo
    report_page_size: Literal["A4", "letter"] = "A4"
    # Comma-separated extra TrueType fonts (.ttf/.ttc) for characters the bundled fonts lack (rare CJK, other scripts).
    report_extra_fonts: str = ""

    @field_validator("nodule_model_path", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value  # NODULE_MODEL_PATH= : no model

    @property
    def served_nodule_model_path(self) -> Path | None:
        """The nodule checkpoint to load: None when none is set, or the default path holds no file yet (a path set
        by hand that is missing is kept, so serving reports it as a model that failed to load)."""
        path = self.nodule_model_path
        if path is None or (path.resolve() == DEFAULT_NODULE_MODEL_PATH and not path.is_file()):
            return None
        return path

    @property
    def report_extra_font_paths(self) -> tuple[Path, ...]:
        return tuple(Path(part.strip()) for part in self.report_extra_fonts.split(",") if part.strip())

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.var_dir / 'cxr.db'}"

    @property
    def resolved_log_dir(self) -> Path:
        return self.log_dir or self.var_dir / "logs"

    @property
    def resolved_image_store_dir(self) -> Path:
        return self.image_store_dir or self.var_dir / "images"

    @property
    def resolved_retrieval_index_dir(self) -> Path:
        return self.retrieval_index_dir or self.var_dir / "retrieval"

    @property
    def resolved_mlflow_tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.var_dir / 'mlflow.db'}"

    @property
    def resolved_backup_dir(self) -> Path:
        return self.backup_dir or self.var_dir / "backups"

    @property
    def resolved_runtime_cache_dir(self) -> Path:
        return self.runtime_cache_dir or self.var_dir / "runtimes"

    @property
    def mlflow_artifact_dir(self) -> Path:
        return self.var_dir / "mlartifacts"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
