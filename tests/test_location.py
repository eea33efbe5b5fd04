"""The data location is a run-time setting: parameter, else AIMOVES_DATA_DIR, else the Variable aimoves-data-dir, else ./data."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aimoves.location import ENV_VAR, VARIABLE, default_data_dir, resolve_data_dir

REPO = Path(__file__).resolve().parents[1]


def test_the_parameter_wins_then_the_environment_then_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("aimoves.location._variable", lambda: None)
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert (resolve_data_dir(None), default_data_dir()) == ("data", "data")
    monkeypatch.setenv(ENV_VAR, "s3://team-bucket/aimoves")
    assert (resolve_data_dir(None), default_data_dir()) == ("s3://team-bucket/aimoves", "s3://team-bucket/aimoves")
    assert resolve_data_dir("/srv/aimoves") == "/srv/aimoves"
    monkeypatch.setenv(ENV_VAR, "")  # set but empty: as if unset
    assert resolve_data_dir(None) == "data"


@pytest.mark.flow
def test_the_prefect_variable_serves_when_the_worker_has_no_setting(prefect_harness: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect import flow
    from prefect.variables import Variable

    @flow
    def where() -> str:
        return resolve_data_dir(None)

    monkeypatch.delenv(ENV_VAR, raising=False)
    Variable.set(VARIABLE, "s3://from-the-server/aimoves", overwrite=True)
    try:
        assert where() == "s3://from-the-server/aimoves"
        assert resolve_data_dir(None) == "data"  # outside a flow run nothing asks a server
        monkeypatch.setenv(ENV_VAR, "/on/this/worker")
        assert where() == "/on/this/worker"  # the worker's own setting beats the team's
    finally:
        Variable.unset(VARIABLE)
    monkeypatch.delenv(ENV_VAR)
    assert where() == "data"


def test_deployments_carry_no_data_location() -> None:
    """One prefect.yaml for a laptop and a team: the location comes from the worker or the server at run time."""
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    assert [d["name"] for d in spec["deployments"] if "data_dir" in (d.get("parameters") or {})] == []


@pytest.mark.flow
def test_a_flow_without_data_dir_writes_under_aimoves_data_dir(prefect_harness: None, tmp_path: Path, small_universe_file: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from aimoves.flows.derive import derive
    from aimoves.flows.prices import daily

    monkeypatch.setenv(ENV_VAR, str(tmp_path / "team-data"))
    daily(day="2025-01-27", markets=["US"], source="simulated", universe=str(small_universe_file), news_source="none")
    derive(start="2025-01-27", markets=["US"], universe=str(small_universe_file))
    assert list((tmp_path / "team-data" / "prices" / "market=US").rglob("*.parquet"))
    assert list((tmp_path / "team-data" / "stock_moves").rglob("*.parquet"))


def test_the_cli_data_dir_defaults_to_aimoves_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from aimoves.cli import app

    monkeypatch.setenv(ENV_VAR, str(tmp_path / "elsewhere"))
    result = CliRunner().invoke(app, ["status"])
    assert str(tmp_path / "elsewhere") in result.output, result.output


def test_s3_configuration_faults_are_one_line_and_exit_2_before_the_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No credentials, an unreachable endpoint, a missing bucket: `aimoves backfill --data-dir s3://…` says which, exit 2."""
    from typer.testing import CliRunner

    from aimoves.cli import app
    from s3kit import S3_ENV, free_port, s3_server

    args = ["backfill", "--source", "simulated", "--start", "2025-01-02", "--end", "2025-01-03", "--markets", "US"]
    runner = CliRunner()
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # an engine start would fail loudly, not silently pass
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with s3_server() as s3:
        s3.client().create_bucket(Bucket="aimoves-cli")
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
        no_credentials = runner.invoke(app, [*args, "--data-dir", "s3://aimoves-cli/x"])
        for name, value in S3_ENV.items():
            monkeypatch.setenv(name, value)
        missing_bucket = runner.invoke(app, [*args, "--data-dir", "s3://no-such-bucket/x"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    unreachable = runner.invoke(app, [*args, "--data-dir", "s3://aimoves-cli/x"])
    for result, says in ((no_credentials, "no AWS credentials"), (missing_bucket, "bucket 'no-such-bucket' does not exist"),
                         (unreachable, "cannot reach the object store")):
        assert result.exit_code == 2, result.output
        text = " ".join(result.output.split())  # rich wraps at the test terminal's width
        assert says in text and text.startswith("error:") and text.count("error") == 1, result.output
        assert "Starting Prefect flow" not in result.output
