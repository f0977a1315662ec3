"""The settings model: the README's table lists exactly its variables, values parse as before, and
every read sees the environment of now."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shipyard.archive import max_unpacked_bytes
from shipyard.settings import Settings, SettingsError, env_name, settings
from shipyard.variants import DEFAULT_MAX_VARIANT_ELEMENTS, max_output_elements, max_variant_elements
from targets.engine.limits import max_parallel_steps
from targets.engine.servers import idle_exit_s
from tests.conftest import ROOT

NAME = re.compile(r"SHIPYARD_[A-Z0-9_]*[A-Z0-9]")
PACKAGES = ("shipyard", "flows", "targets", "registry", "exporters", "infra", "bench")
# A read of a variable named in the code (not a write: `os.environ["SHIPYARD_X"] = ...` for a child
# process is fine). Not caught, and meant: flows/warm_runs.py's own socket variables (its launcher
# imports nothing heavy) and the step settings copied raw into the step cache key.
ENV_READ = re.compile(
    r"""(?:environ\.get\(|getenv\()\s*["']SHIPYARD_|environ\[\s*["']SHIPYARD_\w+["']\s*\](?!\s*=[^=])"""
)


def _readme_table() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Environment\n") :]
    section = section[: section.index("\n#", 1)]
    return "\n".join(line for line in section.splitlines() if line.startswith("| `"))


def test_the_readme_table_lists_every_setting_and_nothing_else() -> None:
    fields = {env_name(name) for name in Settings.model_fields}
    table = _readme_table()
    listed = {name for row in table.splitlines() for name in NAME.findall(row.split("|")[1])}
    assert fields - listed == set(), "settings missing from the README's environment table"
    assert listed - fields == set(), "README rows of variables that are no setting"
    assert set(NAME.findall(table)) <= fields, "the table mentions a variable that is no setting"


def test_deployment_files_name_only_settings() -> None:
    """docker-compose.yml, the Makefile and the image set or pass variables the code reads."""
    fields = {env_name(name) for name in Settings.model_fields}
    for path in ("docker-compose.yml", "Makefile", "infra/Dockerfile"):
        assert set(NAME.findall((ROOT / path).read_text())) <= fields, path


def test_every_setting_is_described() -> None:
    undescribed = [name for name, field in Settings.model_fields.items() if not field.description]
    assert undescribed == []


def test_no_module_reads_a_shipyard_variable_itself() -> None:
    """Only shipyard/settings.py reads SHIPYARD_* variables by name."""
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != ROOT / "shipyard" / "settings.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if ENV_READ.search(line)
    ]
    assert found == []


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(env_name(name), raising=False)
    monkeypatch.setenv("HOME", "/nowhere")
    got = settings()
    assert got.home == Path("/nowhere/.shipyard")
    assert (got.max_variant_elements, DEFAULT_MAX_VARIANT_ELEMENTS) == (1 << 24, 1 << 24)
    assert got.max_unpacked_bytes == 8 * 2**30 and got.max_step_file_mb == 32 * 1024
    assert got.max_step_timeout_s == 7200 and got.cache_max_gb == 50 and got.keep_runs_days == 14
    assert got.webhook_port == 8000 and got.webhook_host == "127.0.0.1" and got.webhook_secret == ""
    assert (got.webhook_max_mb, got.webhook_max_uploads, got.webhook_max_small_uploads) == (2048, 4, 64)
    assert (got.webhook_read_timeout_s, got.webhook_min_kbps) == (30, 64)
    assert (got.prefect_port, got.postgres_port, got.s3_port) == (4200, 54320, 8333)
    assert got.service_dir == Path(".shipyard/service") and got.nightly_cron == "0 3 * * *"
    assert got.cache and got.browser and got.warm_workers and got.warm_runs and got.webhook_body_signatures
    assert not got.no_preload
    assert got.registry is got.runtime_dir is got.max_parallel_steps is got.worker_slots is None
    assert "webhook_secret" not in repr(got)


@pytest.mark.parametrize(
    ("value", "on"),
    [("off", False), ("OFF", False), ("0", False), ("False", False), ("no", False), ("", True), ("on", True)],
)
def test_browser_and_cache_switches(monkeypatch: pytest.MonkeyPatch, value: str, on: bool) -> None:
    monkeypatch.setenv("SHIPYARD_BROWSER", value)
    monkeypatch.setenv("SHIPYARD_CACHE", value)
    assert settings().browser is on and settings().cache is on


@pytest.mark.parametrize(("value", "on"), [("0", False), ("", True), ("false", True), ("1", True)])
def test_switches_off_only_at_zero(monkeypatch: pytest.MonkeyPatch, value: str, on: bool) -> None:
    for name in ("SHIPYARD_WARM_WORKERS", "SHIPYARD_WARM_RUNS", "SHIPYARD_WEBHOOK_BODY_SIGNATURES"):
        monkeypatch.setenv(name, value)
    got = settings()
    assert got.warm_workers is got.warm_runs is got.webhook_body_signatures is on


def test_no_preload_is_any_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPYARD_NO_PRELOAD", "0")
    assert settings().no_preload
    monkeypatch.setenv("SHIPYARD_NO_PRELOAD", "")
    assert not settings().no_preload


def test_numbers_parse_as_int_and_float_do(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever `int()`/`float()` take; a bad value is one line naming the variable (exit 2 in the CLI)."""
    monkeypatch.setenv("SHIPYARD_MAX_UNPACKED_BYTES", " 1_048_576 ")
    monkeypatch.setenv("SHIPYARD_WEBHOOK_MAX_MB", "1e3")
    assert max_unpacked_bytes() == 2**20 and settings().webhook_max_mb == 1000.0
    monkeypatch.setenv("SHIPYARD_MAX_UNPACKED_BYTES", "1.5")
    with pytest.raises(SettingsError, match=r"^SHIPYARD_MAX_UNPACKED_BYTES='1.5': invalid literal for int"):
        settings()


def test_empty_is_unset_where_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    """`os.environ.get(name) or default` took an empty value as unset; `get(name, default)` did not."""
    monkeypatch.setenv("SHIPYARD_MAX_VARIANT_ELEMENTS", "")
    monkeypatch.setenv("SHIPYARD_MAX_OUTPUT_ELEMENTS", "")
    monkeypatch.setenv("SHIPYARD_MAX_PARALLEL_STEPS", "")
    monkeypatch.setenv("SHIPYARD_RUNTIME_DIR", "")
    got = settings()
    assert got.max_variant_elements == 1 << 24 and got.runtime_dir is None
    assert got.max_output_elements is got.max_parallel_steps is None
    monkeypatch.setenv("SHIPYARD_WEBHOOK_PORT", "")
    with pytest.raises(SettingsError, match="SHIPYARD_WEBHOOK_PORT"):
        settings()


def test_zero_is_a_value_not_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPYARD_MAX_OUTPUT_ELEMENTS", "0")
    monkeypatch.setenv("SHIPYARD_MAX_PARALLEL_STEPS", "0")
    assert max_output_elements(100) == 0 and max_parallel_steps() == 1


def test_a_bad_idle_time_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPYARD_WARM_IDLE_S", "soon")
    assert idle_exit_s() == 900.0
    monkeypatch.setenv("SHIPYARD_WARM_IDLE_S", "-5")
    assert idle_exit_s() == 0.0


def test_reads_see_the_environment_of_now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPYARD_MAX_VARIANT_ELEMENTS", "1000")
    assert max_variant_elements() == 1000 and max_output_elements(1000) == 8000
    monkeypatch.setenv("SHIPYARD_MAX_VARIANT_ELEMENTS", "2000")
    assert max_variant_elements() == 2000


def test_lower_case_names_are_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHIPYARD_WEBHOOK_PORT", raising=False)
    monkeypatch.setenv("shipyard_webhook_port", "9")
    assert settings().webhook_port == 8000
