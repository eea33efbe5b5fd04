"""The divergence dataset, the digest and the report page, on plain functions (no Prefect engine).

The simulated market's shock (2025-01-27: US semiconductors −15%, HK/CN AI up) must come out
divergent for semiconductors and all_ai; a quiet week must not; closed markets are missing, never 0%.
"""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from aimoves.errors import AimovesError
from conftest import REALDATA_UNIVERSE, SMALL_UNIVERSE


def _backfill(data_dir: Path, universe_text: str, start: date, end: date, markets: tuple[str, ...], source: str, csv_dir: Path | None = None):
    from aimoves.planning import plan_backfill
    from aimoves.run import run_prices
    from aimoves.sources.factory import SourceSettings, news_source_for
    from aimoves.universe import parse_universe

    universe = parse_universe(universe_text, "test universe")
    plans = [plan_backfill(universe, m, start, end) for m in markets]
    settings = SourceSettings(source, csv_dir, None, None, False, news_source_for(source, None))
    return run_prices("backfill", plans, settings, universe, data_dir), universe


@pytest.fixture(scope="module")
def shocked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    data_dir = tmp_path_factory.mktemp("shock") / "data"
    summary, universe = _backfill(data_dir, SMALL_UNIVERSE, date(2025, 1, 2), date(2025, 2, 14), ("US", "HK", "CN"), "simulated")
    return data_dir, summary


def _divergence(data_dir: Path) -> pd.DataFrame:
    frame = pd.read_parquet(data_dir / "divergence")
    frame["date"] = frame["date"].astype(str)
    return frame.set_index(["date", "sector"])


def test_the_shock_is_divergent_for_semiconductors_and_all_ai(shocked) -> None:
    data_dir, summary = shocked
    div = _divergence(data_dir)
    assert summary.divergence.window == "2025-01-02..2025-02-14"
    for sector in ("semiconductors", "all_ai"):
        row = div.loc[("2025-01-27", sector)]
        assert row["divergent"], row
        assert row["ret_us_usd"] < 0 < row["ret_china_usd"]
        assert row["spread"] == pytest.approx(row["ret_china_usd"] - row["ret_us_usd"])
        assert row["zscore"] >= 3
        assert "short_history" not in list(row["dq_flags"])
    semis = div.loc[("2025-01-27", "semiconductors")]
    assert (semis["n_us"], semis["n_china"]) == (2, 1)  # NVDA, AMD; SMIC once (0981.HK and 688981.SS are one company)
    assert semis["us_top_symbol"] in ("NVDA", "AMD") and semis["china_top_symbol"] in ("0981.HK", "688981.SS")


def test_a_quiet_week_is_not_divergent(shocked) -> None:
    data_dir, _ = shocked
    div = _divergence(data_dir).reset_index()
    week = div[div["date"].between("2025-02-10", "2025-02-14")]
    assert len(week) == 5 * 3 and not week["divergent"].any() and week["zscore"].notna().all()


def test_closed_markets_are_missing_never_zero(shocked) -> None:
    data_dir, _ = shocked
    div = _divergence(data_dir)
    for day in ("2025-01-29", "2025-01-30", "2025-01-31"):  # HK and CN closed for Lunar New Year
        row = div.loc[(day, "semiconductors")]
        assert pd.isna(row["ret_china_usd"]) and pd.isna(row["spread"]) and pd.isna(row["zscore"]) and not row["divergent"]
        assert row["n_china"] == 0 and {"closed:HK", "closed:CN"} <= set(row["dq_flags"])
        assert pd.notna(row["ret_us_usd"])
    us_holiday = div.loc[("2025-01-20", "all_ai")]
    assert pd.isna(us_holiday["ret_us_usd"]) and "closed:US" in list(us_holiday["dq_flags"]) and pd.notna(us_holiday["ret_china_usd"])
    # CN still closed on 2025-02-03: the China side is HK alone, its return spanning the closure
    feb3 = div.loc[("2025-02-03", "semiconductors")]
    moves = pd.read_parquet(data_dir / "stock_moves", filters=[("symbol", "==", "0981.HK")])
    smic = moves[moves["date"].astype(str) == "2025-02-03"].iloc[0]
    assert str(smic["prev_date"]) == "2025-01-28"
    assert feb3["ret_china_usd"] == pytest.approx(smic["ret_usd"]) and "closed:CN" in list(feb3["dq_flags"])


def test_schema_version_partitions_and_an_idempotent_rewrite(shocked) -> None:
    from aimoves.divergence import derive_divergence
    from aimoves.schema import DIVERGENCE
    from aimoves.universe import parse_universe

    data_dir, summary = shocked
    files = sorted((data_dir / "divergence").rglob("*.parquet"))
    assert [f.parent.name for f in files] == ["year=2025"]
    meta = pq.read_schema(files[0]).metadata
    assert meta[b"aimoves.dataset"] == b"divergence" and meta[b"aimoves.schema_version"] == DIVERGENCE.version.encode()
    before = files[0].read_bytes()
    report = derive_divergence(data_dir, parse_universe(SMALL_UNIVERSE, "u"), date(2025, 1, 20), date(2025, 1, 31), "rerun", pd.Timestamp.now(tz="UTC"))
    assert report.passed == summary.divergence.passed - 0 or report.passed > 0
    assert report.partitions_written == [] and files[0].read_bytes() == before  # same rows, file untouched


def test_too_little_history_is_a_flag_not_a_zscore(shocked, tmp_path: Path) -> None:
    from aimoves.divergence import Z_MIN_PERIODS, compute_divergence
    from aimoves.store import read_frame
    from aimoves.schema import STOCK_MOVES
    from aimoves.universe import parse_universe

    data_dir, _ = shocked
    moves = read_frame(STOCK_MOVES, data_dir, date(2025, 1, 2), date(2025, 2, 14))  # no history before the window
    rows = compute_divergence(moves, parse_universe(SMALL_UNIVERSE, "u"), date(2025, 1, 2), date(2025, 2, 14))
    semis = rows[rows["sector"] == "semiconductors"].reset_index(drop=True)
    spreads = semis["spread"].notna().cumsum()
    early = semis[spreads <= Z_MIN_PERIODS]
    assert len(early) and early["zscore"].isna().all() and not early["divergent"].any()
    assert all("short_history" in f for f, s in zip(early["dq_flags"], early["spread"]) if pd.notna(s))
    late = semis[(spreads > Z_MIN_PERIODS) & semis["spread"].notna()]
    assert len(late) and late["zscore"].notna().all() and not any("short_history" in f for f in late["dq_flags"])


def test_a_universe_without_china_members_has_no_divergence_rows(shocked) -> None:
    from aimoves.divergence import compute_divergence, suite_frame
    from aimoves.schema import STOCK_MOVES
    from aimoves.store import read_frame
    from aimoves.universe import parse_universe

    data_dir, _ = shocked
    us_only = parse_universe("stocks:\n  - {symbol: NVDA, name: N, market: US, sector: semiconductors}\n", "u")
    rows = compute_divergence(read_frame(STOCK_MOVES, data_dir, date(2025, 1, 2), date(2025, 2, 14)), us_only, date(2025, 1, 2), date(2025, 2, 14))
    assert rows.empty and "n_china_when_open" in suite_frame(rows)


def test_the_threshold_is_a_setting(shocked, monkeypatch: pytest.MonkeyPatch) -> None:
    from aimoves.divergence import compute_divergence, divergence_threshold
    from aimoves.schema import STOCK_MOVES
    from aimoves.store import read_frame
    from aimoves.universe import parse_universe

    data_dir, _ = shocked
    moves = read_frame(STOCK_MOVES, data_dir, date(2024, 9, 1), date(2025, 2, 14))
    universe = parse_universe(SMALL_UNIVERSE, "u")
    monkeypatch.setenv("AIMOVES_DIVERGENCE_Z", "50")
    assert divergence_threshold() == 50
    assert not compute_divergence(moves, universe, date(2025, 1, 27), date(2025, 1, 27))["divergent"].any()
    monkeypatch.setenv("AIMOVES_DIVERGENCE_Z", "three")
    with pytest.raises(AimovesError, match="AIMOVES_DIVERGENCE_Z='three': not a number"):
        divergence_threshold()


def test_the_digest_of_the_shock_shows_the_divergence(shocked, tmp_path: Path) -> None:
    from aimoves.digest import write_digest

    data_dir, _ = shocked
    result = write_digest(data_dir, tmp_path, "2025-01-27")
    page = result.html.read_text()
    assert result.warnings == []
    banner = page.split("<strong>Divergent: ", 1)[1].split(".</strong>", 1)[0].split(", ")
    assert {"semiconductors", "all_ai"} <= set(banner), banner
    assert "data:image/png;base64," in page and "<script" not in page  # self-contained, no outside file
    assert result.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    div = _divergence(data_dir).loc[("2025-01-27", "semiconductors")]
    shown = f"{div['spread'] * 100:+.2f}%".replace("-", "−")
    assert shown in page  # the spread, formatted for people
    for market in ("US", "HK", "CN"):
        assert f"<h3>{market}</h3>" in page  # movers of every market (all open on 2025-01-27)
    stored = sorted({d for d, _ in _divergence(data_dir).index if d <= "2025-01-27"})
    assert f"Last {min(20, len(stored))} dates" in page and stored[-min(20, len(stored))] in page


def test_the_digest_of_a_closed_day_marks_it_and_a_missing_day_fails(shocked, tmp_path: Path) -> None:
    from aimoves.digest import DigestError, write_digest

    data_dir, _ = shocked
    page = write_digest(data_dir, tmp_path, "2025-01-30").html.read_text()
    assert "HK (closed)" in page and "CN (closed)" in page and "<h3>HK — closed</h3>" in page
    with pytest.raises(DigestError, match="nothing stored for 2025-03-10"):
        write_digest(data_dir, tmp_path, "2025-03-10")
    assert not (tmp_path / "digest-2025-03-10.html").exists()


def test_digest_cli_exit_codes(shocked, tmp_path: Path) -> None:
    """0 with a warning when a dataset is missing but the page was written; 1 when nothing can be shown."""

    from typer.testing import CliRunner

    from aimoves.cli import app

    data_dir, _ = shocked
    partial = tmp_path / "partial"
    for name in ("sector_moves", "stock_moves"):
        shutil.copytree(data_dir / name, partial / name)
    runner = CliRunner()
    ok = runner.invoke(app, ["digest", "--date", "2025-01-27", "--data-dir", str(partial), "--out", str(tmp_path / "out")])
    assert ok.exit_code == 0, ok.output
    assert "no divergence rows for this date" in ok.output and (tmp_path / "out" / "digest-2025-01-27.html").exists()
    empty = runner.invoke(app, ["digest", "--date", "2025-01-27", "--data-dir", str(tmp_path / "nothing"), "--out", str(tmp_path / "out2")])
    assert empty.exit_code == 1 and not (tmp_path / "out2").exists()
    latest = runner.invoke(app, ["digest", "--data-dir", str(data_dir), "--out", str(tmp_path / "out3")])
    assert latest.exit_code == 0 and (tmp_path / "out3" / "digest-2025-02-14.html").exists(), latest.output


def test_alerts_carry_headlines_of_the_top_movers(shocked) -> None:
    from aimoves.assets import divergence_alerts

    data_dir, _ = shocked
    alerts = divergence_alerts(data_dir, "2025-01-02", "2025-02-14")
    div = _divergence(data_dir).reset_index()
    assert [a["date"] for a in alerts] == sorted(div.loc[div["divergent"], "date"].unique())
    shock = next(a for a in alerts if a["date"] == "2025-01-27")
    assert shock["sector"] == "all_ai" and {s["sector"] for s in shock["sectors"]} >= {"semiconductors", "all_ai"}
    assert 1 <= len(shock["headlines"]) <= 5 and all(h["title"] for h in shock["headlines"])


def test_report_html_comes_from_the_template_and_escapes(tmp_path: Path) -> None:
    from aimoves.report import _html

    shown = pd.DataFrame({"sector": ["<b>semis</b>"], "day 0": ["+1.00%"]})
    table = pd.DataFrame({"sector": ["<b>semis</b>"], "day 0": [0.01]})
    page = _html("T & <x>", "intro", "chart.png", shown, table, pd.DataFrame())
    assert "&lt;b&gt;semis&lt;/b&gt;" in page and "T &amp; &lt;x&gt;" in page
    assert '<td class="num up">+1.00%</td>' in page and "No big move" in page


@pytest.mark.realdata
def test_realdata_semiconductors_jan_feb_2025(tmp_path: Path, realdata_dir: Path) -> None:
    """NVDA, AMD, AVGO, TSM against SMIC (0981.HK), recomputed straight from the CSV files.

    HKD is pegged (7.75–7.85): the test's FX file holds one constant rate, so USD returns equal HKD ones.
    """
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    symbols = ("NVDA", "AMD", "AVGO", "TSM", "0981.HK")
    for symbol in symbols:
        # A copy in the test's temporary folder: the CSV reader refuses links that leave the folder it was given.
        shutil.copyfile(realdata_dir / f"{symbol}.csv", csv_dir / f"{symbol}.csv")
    days = pd.bdate_range("2024-06-03", "2025-03-31")
    (csv_dir / "HKDUSD=X.csv").write_text("Date,Open,High,Low,Close,Adj Close,Volume\n"
                                          + "".join(f"{d:%Y-%m-%d},0.1282,0.1282,0.1282,0.1282,0.1282,0\n" for d in days))
    universe = REALDATA_UNIVERSE.replace("benchmarks: {}", 'benchmarks: {}\nfx: {HKD: "HKDUSD=X"}')
    data_dir = tmp_path / "data"
    _backfill(data_dir, universe, date(2025, 1, 2), date(2025, 2, 28), ("US", "HK"), "csv", csv_dir)

    def returns(symbol: str) -> pd.Series:
        if symbol.endswith(".HK"):
            close = pd.read_csv(realdata_dir / f"{symbol}.csv", skiprows=[1, 2], index_col=0)["Close"]  # yfinance 3-line header, adjusted
        else:
            close = pd.read_csv(realdata_dir / f"{symbol}.csv", index_col="Date")["Adj Close"]
        close.index = pd.to_datetime(close.index)
        return (close / close.shift(1) - 1).loc["2025-01-01":"2025-02-28"]

    us = pd.concat([returns(s) for s in ("NVDA", "AMD", "AVGO", "TSM")], axis=1).mean(axis=1)
    china = returns("0981.HK")
    div = _divergence(data_dir).xs("semiconductors", level="sector")
    dates = sorted(set(us.index) | set(china.index))
    assert [d.strftime("%Y-%m-%d") for d in dates] == [d for d in div.index if "2025-01-01" <= d <= "2025-02-28"]
    for d in dates:
        row = div.loc[d.strftime("%Y-%m-%d")]
        want_us, want_cn = us.get(d, np.nan), china.get(d, np.nan)
        assert row["ret_us_usd"] == pytest.approx(want_us, abs=1e-12, nan_ok=True), d
        assert row["ret_china_usd"] == pytest.approx(want_cn, abs=1e-12, nan_ok=True), d
        assert row["spread"] == pytest.approx(want_cn - want_us, abs=1e-12, nan_ok=True), d
    jan27 = div.loc["2025-01-27"]
    assert jan27["ret_us_usd"] < 0 and jan27["ret_china_usd"] < 0 and not jan27["divergent"]  # both fell
    feb3 = div.loc["2025-02-03"]
    close = pd.read_csv(realdata_dir / "0981.HK.csv", skiprows=[1, 2], index_col=0)["Close"]
    assert feb3["ret_china_usd"] == pytest.approx(close["2025-02-03"] / close["2025-01-28"] - 1, abs=1e-12)  # across the closure
    for d in ("2025-01-29", "2025-01-30", "2025-01-31"):
        assert pd.isna(div.loc[d, "ret_china_usd"]) and "closed:HK" in list(div.loc[d, "dq_flags"])
    assert pd.isna(div.loc["2025-01-20", "ret_us_usd"])
    print(f"\nrealdata semiconductors: 2025-01-27 US {jan27['ret_us_usd']:+.4%} China {jan27['ret_china_usd']:+.4%} "
          f"spread {jan27['spread']:+.4%} z {jan27['zscore']:+.2f}; 2025-02-03 China {feb3['ret_china_usd']:+.4%} (from 2025-01-28); "
          f"{len(dates)} dates checked; divergent dates: {sorted(d for d in div.index if div.loc[d, 'divergent'] and d >= '2025-01-01')}")


def test_a_bad_row_is_quarantined_with_its_reason_and_a_thin_side_flagged(shocked, tmp_path: Path) -> None:
    from aimoves.derive import _split_and_write
    from aimoves.divergence import compute_divergence, suite_frame
    from aimoves.schema import DIVERGENCE, QUARANTINE_DIVERGENCE, STOCK_MOVES
    from aimoves.store import read_frame
    from aimoves.universe import parse_universe

    data_dir, _ = shocked
    rows = compute_divergence(read_frame(STOCK_MOVES, data_dir, date(2024, 9, 1), date(2025, 1, 31)), parse_universe(SMALL_UNIVERSE, "u"),
                              date(2025, 1, 27), date(2025, 1, 31))
    bad = (rows["date"] == pd.Timestamp("2025-01-29")) & (rows["sector"] == "semiconductors")
    rows.loc[bad, "n_china"] = 1  # HK and CN were closed: nobody can have been counted
    report = _split_and_write(suite_frame(rows), "divergence", DIVERGENCE, QUARANTINE_DIVERGENCE, tmp_path, "run-1", pd.Timestamp.now(tz="UTC"), "w")
    assert report.quarantined == 1 and report.passed == len(rows) - 1
    q = pd.read_parquet(tmp_path / "quarantine" / "divergence")
    assert list(q["expectation"]) == ["china_closed_counts_nobody"]
    assert q["reason"].iloc[0] == "the china side's markets were closed on 2025-01-29 yet 1 members were counted"
    kept = pd.read_parquet(tmp_path / "divergence")
    cloud = kept[(kept["date"].astype(str) == "2025-01-27") & (kept["sector"] == "cloud")].iloc[0]
    assert {"thin_us_side", "thin_china_side"} <= set(cloud["dq_flags"])  # MSFT alone against Kingsoft Cloud alone
