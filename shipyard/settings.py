"""Every SHIPYARD_* environment variable: its type, default and meaning, in one model.

`settings()` reads the environment on every call (about a millisecond): tests that set a
variable, and processes whose environment changes after import, see the value of now.
Values are parsed as the code that read them before did (`int()`, `float()`, its own words for
on and off), so every value accepted before still is. Where a setting's default depends on the
machine or on another setting, the field is None and its reader says what it falls back to.
The README's environment table lists the same variables (tests/test_settings.py checks it).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasGenerator, BeforeValidator, Field, ValidationError
from pydantic_core import PydanticUseDefault
from pydantic_settings import BaseSettings, SettingsConfigDict

from shipyard.errors import InputError

__all__ = ["PREFIX", "Settings", "SettingsError", "env_name", "settings"]

PREFIX = "SHIPYARD_"
OFF_WORDS = ("off", "0", "false", "no")


def _env_name(field: str) -> str:
    return f"{PREFIX}{field.upper()}"


def _number(parse: Callable[[str], Any], blank_is_unset: bool = False, bad_is_unset: bool = False) -> Any:
    """A validator that parses a variable's text with `parse` (so `int()`/`float()` decide what is
    valid); the options keep the readers that took an empty or a bad value as unset."""

    def validate(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if blank_is_unset:
            _unset_if_blank(value)
        try:
            return parse(value)
        except ValueError:
            if bad_is_unset:
                raise PydanticUseDefault() from None
            raise

    return BeforeValidator(validate)


def _switch(on: Callable[[str], bool]) -> Any:
    return BeforeValidator(lambda value: on(value) if isinstance(value, str) else value)


def _unset_if_blank(value: Any) -> Any:
    if value == "":
        raise PydanticUseDefault()
    return value


Int = Annotated[int, _number(int)]
IntOrUnset = Annotated[int, _number(int, blank_is_unset=True)]  # empty: the default
OptionalInt = Annotated[int | None, _number(int, blank_is_unset=True)]
Float = Annotated[float, _number(float)]
FloatOrUnset = Annotated[float, _number(float, blank_is_unset=True)]
OnUnlessOffWord = Annotated[bool, _switch(lambda v: v.lower() not in OFF_WORDS)]
OnUnlessZero = Annotated[bool, _switch(lambda v: v != "0")]
OnIfNotEmpty = Annotated[bool, _switch(bool)]


class Settings(BaseSettings):
    """The operator's settings, from SHIPYARD_<FIELD> environment variables."""

    model_config = SettingsConfigDict(
        case_sensitive=True,
        alias_generator=AliasGenerator(validation_alias=_env_name),
    )

    # where things live
    home: Path = Field(
        default_factory=lambda: Path.home() / ".shipyard",
        description="runs, step cache, sources and the default registry (default ~/.shipyard)",
    )
    registry: str | None = Field(default=None, description="registry URL when --registry is not given")
    runtime_dir: Annotated[Path | None, BeforeValidator(_unset_if_blank)] = Field(
        default=None,
        description="sockets and locks (default $XDG_RUNTIME_DIR/shipyard, else /tmp/shipyard-<uid>)",
    )
    keep_runs_days: Float = Field(
        default=14.0, description="how long kept (failed, --keep-workdir) run folders stay"
    )

    # the step cache
    cache: OnUnlessOffWord = Field(default=True, description="off, 0, false or no turn the step cache off")
    cache_dir: Path | None = Field(
        default=None, description="the step cache's folder (default $SHIPYARD_HOME/cache/steps)"
    )
    cache_max_gb: FloatOrUnset = Field(
        default=50.0, description="the step cache's size; least recently used go first"
    )

    # steps: how many, how big, how long
    max_parallel_steps: OptionalInt = Field(default=None, description="steps at once (default: the cores)")
    step_memory_mb: OptionalInt = Field(
        default=None, description="a step's memory cap when its spec sets none (MB)"
    )
    max_step_memory_mb: OptionalInt = Field(default=None, description="the most memory_mb a spec may ask for")
    max_step_timeout_s: IntOrUnset = Field(
        default=2 * 3600, description="the most timeout_s a spec may ask for"
    )
    max_step_file_mb: IntOrUnset = Field(
        default=32 * 1024, description="largest file a step may write (RLIMIT_FSIZE)"
    )
    max_variant_elements: IntOrUnset = Field(
        default=1 << 24, description="input elements one validation variant may hold"
    )
    max_output_elements: OptionalInt = Field(
        default=None, description="output elements one variant may give (default 8 x max_variant_elements)"
    )
    max_unpacked_bytes: Int = Field(default=8 * 2**30, description="what a source archive may unpack to")

    # warm step servers
    warm_workers: OnUnlessZero = Field(default=True, description="0: every step in a fresh interpreter")
    warm_idle_s: Annotated[float, _number(float, bad_is_unset=True)] = Field(
        default=900.0, description="how long a shared warm server waits for work; 0: each run has its own"
    )
    max_warm_servers: OptionalInt = Field(
        default=None, description="shared warm servers at once (default 1 per 3 GB)"
    )
    no_preload: OnIfNotEmpty = Field(
        default=False, description="any value: a warm server imports no toolchain ahead"
    )

    # runtimes the web targets are proven in
    browser: OnUnlessOffWord = Field(
        default=True, description="off, 0, false or no: prove web targets in Node only"
    )
    chromium: str | None = Field(default=None, description="the Chromium binary (default chromium on PATH)")
    node: str | None = Field(default=None, description="the Node.js binary (default the venv's)")

    # the webhook and `shipyard submit`
    webhook_secret: str = Field(
        default="", repr=False, description="the webhook's shared secret (16+ characters)"
    )
    webhook_url: str | None = Field(
        default=None, description="where submit sends (default http://127.0.0.1:<port>)"
    )
    webhook_port: Int = Field(default=8000, description="where the webhook listens")
    webhook_host: str = Field(default="127.0.0.1", description="the webhook's bind address")
    webhook_public_url: str | None = Field(default=None, description="the webhook's URL in its answers")
    webhook_max_mb: Float = Field(default=2048.0, description="the largest upload (MB)")
    webhook_max_uploads: Int = Field(
        default=4, description="uploads over 8 MiB (or chunked) received at once"
    )
    webhook_max_small_uploads: Int = Field(default=64, description="uploads up to 8 MiB received at once")
    webhook_spool_dir: Path = Field(
        default_factory=lambda: Path(tempfile.gettempdir()), description="where uploads are spooled"
    )
    webhook_read_timeout_s: Float = Field(default=30.0, description="the longest pause in an upload's body")
    webhook_min_kbps: Float = Field(
        default=64.0, description="the slowest rate an upload's body may arrive at"
    )
    webhook_body_signatures: OnUnlessZero = Field(
        default=True, description="0: refuse the deprecated body signature"
    )

    # the service (`make up`) and its workers
    service_dir: Path = Field(
        default=Path(".shipyard/service"), description="the service's state, logs and pids"
    )
    prefect_port: Int = Field(default=4200, description="the Prefect server's port")
    postgres_port: Int = Field(default=54320, description="PostgreSQL's port")
    s3_port: Int = Field(default=8333, description="SeaweedFS's S3 port")
    worker_name: str | None = Field(
        default=None, description="a worker's name in Prefect (default: the host name)"
    )
    worker_slots: OptionalInt = Field(
        default=None, description="a worker's runs and steps at once (default: the cores)"
    )
    warm_runs: OnUnlessZero = Field(
        default=True, description="0: a worker's flow runs start in a fresh interpreter"
    )
    nightly_cron: str = Field(default="0 3 * * *", description="the nightly re-export's schedule")

    # benchmarks
    realworld_cache: Path | None = Field(
        default=None, description="bench/realworld.py's downloads (default .shipyard/realworld)"
    )


class SettingsError(InputError, ValueError):
    """A SHIPYARD_* variable holds a value its setting cannot take (the CLI says so in one line; a
    ValueError as `int()` raised before)."""


def settings() -> Settings:
    """The settings as the environment holds them now."""
    try:
        return Settings()
    except ValidationError as exc:
        error = exc.errors()[0]
        reason = error["msg"].removeprefix("Value error, ")
        raise SettingsError(f"{error['loc'][0]}={error['input']!r}: {reason}") from None


def env_name(field: str) -> str:
    """The environment variable that sets `field` (KeyError for no such field)."""
    if field not in Settings.model_fields:
        raise KeyError(field)
    return _env_name(field)
