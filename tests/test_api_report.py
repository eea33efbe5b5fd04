"""The analyst API, event windows and the report, on small synthetic datasets (no Prefect)."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from aimoves.api import cumulative_sector_move, load_fx, load_prices, load_quarantine, load_sector_moves, load_stock_moves
from aimoves.cli import app
from aimoves.errors import AimovesError
from aimoves.report import HEADLINES_MARKER, event_window, window_moves, write_report
from aimoves.schema import FX, PRICES, QUARANTINE_PRICES, SECTOR_MOVES, STOCK_MOVES, DatasetSpec
from aimoves.store import upsert

EVENT = date(2025, 1, 27)
DAYS = pd.bdate_range("2025-01-13", "2025-02-14")
CLOSED = {
    "US": {"2025-01-20"},  # Martin Luther King Jr. Day
    "HK": {"2025-01-29", "2025-01-30", "2025-01-31"},  # Lunar New Year
    "CN": {"2025-01-28", "2025-01-29", "2025-01-30", "2025-01-31", "2025-02-03", "2025-02-04"},  # Spring Festival
    "ALL": set(),
}
# Hand-picked session returns around the event; every other open session moves by DEFAULT.
RETS = {
    ("US", "semiconductors"): {"2025-01-23": 0.01, "2025-01-24": -0.02, "2025-01-27": -0.17, "2025-01-28": 0.05, "2025-01-29": -0.03,
                               "2025-01-30": 0.01, "2025-01-31": -0.04},
    ("HK", "cloud"): {"2025-01-23": 0.02, "2025-01-24": -0.01, "2025-01-27": 0.10, "2025-01-28": 0.05, "2025-02-03": 0.08,
                      "2025-02-04": -0.02},
    ("ALL", "cloud"): {"2025-01-24": 0.01, "2025-01-27": 0.03, "2025-01-28": 0.02},
}
DEFAULT = 0.001


def _complete(frame: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """Every column of the spec: missing ones null (lists empty), year from date."""
    frame = frame.copy()
    for name in spec.schema.names:
        if name == "year":
            frame[name] = pd.to_datetime(frame["date"]).dt.year
        elif name in ("dq_flags", "news_ids"):
            frame[name] = [[] for _ in range(len(frame))]
        elif name not in frame:
            frame[name] = None
    return frame


def sector_moves_frame(
    rets: dict[tuple[str, str], dict[str, float]] = RETS,
    sectors: tuple[str, ...] = ("semiconductors", "cloud"),
    days: pd.DatetimeIndex = DAYS,
    default: float = DEFAULT,
) -> pd.DataFrame:
    rows = []
    for region in ("US", "HK", "CN", "ALL"):
        for sector in sectors:
            for day in days:
                iso = day.strftime("%Y-%m-%d")
                is_open = iso not in CLOSED[region]
                ret = rets.get((region, sector), {}).get(iso, default) if is_open else None
                rows.append({
                    "date": day, "region": region, "sector": sector, "market_open": is_open, "n_members": 3 if is_open else None,
                    "n_traded": 3 if is_open else None,
                    "ret_ew": ret if region != "ALL" else None,  # ALL reads only the USD columns
                    "ret_ew_usd": ret if region == "ALL" else (None if ret is None else ret + 0.5),  # a wrong USD value for local regions
                    "ret_cw": None if ret is None else ret * 2,
                })
    return _complete(pd.DataFrame(rows), SECTOR_MOVES)


def _prices_frame() -> pd.DataFrame:
    rows = [
        {"date": pd.Timestamp(d), "symbol": s, "market": m, "currency": c, "close": p, "adj_close": p, "volume": 100, "source": "test",
         "ingested_at": pd.Timestamp("2025-03-01T00:00:00Z")}
        for s, m, c in (("NVDA", "US", "USD"), ("AMD", "US", "USD"), ("0981.HK", "HK", "HKD"))
        for d, p in (("2024-12-31", 10.0), ("2025-01-02", 11.0), ("2025-01-03", 12.0))
    ]
    frame = pd.DataFrame(rows)
    for col in ("open", "high", "low"):
        frame[col] = frame["close"]
    return _complete(frame, PRICES)


def _stock_moves_frame() -> pd.DataFrame:
    rows = [
        {"date": pd.Timestamp(d), "symbol": s, "market": m, "sector": sec, "ret": r, "ret_usd": r, "prev_date": pd.Timestamp(p),
         "big_move": abs(r) > 0.1}
        for s, m, sec in (("NVDA", "US", "semiconductors"), ("MSFT", "US", "cloud"), ("3896.HK", "HK", "cloud"))
        for d, p, r in (("2025-01-24", "2025-01-23", 0.01), ("2025-01-27", "2025-01-24", -0.17 if s == "NVDA" else 0.02))
    ]
    return _complete(pd.DataFrame(rows), STOCK_MOVES)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    upsert(sector_moves_frame(), SECTOR_MOVES, root)
    upsert(_stock_moves_frame(), STOCK_MOVES, root)
    upsert(_prices_frame(), PRICES, root)
    return root


def _compound(*rets: float) -> float:
    return math.prod(1 + r for r in rets) - 1


# --- the API -------------------------------------------------------------------------------------


def test_load_prices_filters_and_types(data_dir: Path) -> None:
    prices = load_prices("2025-01-02", date(2025, 1, 3), symbols=["nvda", "981.HK"], data_dir=data_dir)
    assert list(prices["symbol"]) == ["0981.HK", "0981.HK", "NVDA", "NVDA"]  # symbols normalized, sorted by symbol, date
    assert list(prices["date"]) == [date(2025, 1, 2), date(2025, 1, 3)] * 2
    assert (prices.date == date(2025, 1, 3)).sum() == 2  # dates as the files hold them (issue 9 item 10)
    assert type(prices["date"].iloc[0]) is type(pd.read_parquet(data_dir / "prices")["date"].iloc[0])  # what a Parquet reader gives
    assert isinstance(prices["market"].dtype, pd.StringDtype) or prices["market"].dtype == object
    assert not isinstance(prices["market"].dtype, pd.CategoricalDtype)
    assert pd.api.types.is_integer_dtype(prices["year"]) and set(prices["year"]) == {2025}
    assert list(prices.columns) == PRICES.schema.names
    us = load_prices(end="2024-12-31", markets="us", data_dir=data_dir)
    assert sorted(us["symbol"]) == ["AMD", "NVDA"] and set(us["year"]) == {2024}
    assert len(load_prices(data_dir=data_dir)) == 9


def test_load_stock_and_sector_moves(data_dir: Path) -> None:
    cloud = load_stock_moves("2025-01-27", "2025-01-27", sectors="cloud", data_dir=data_dir)
    assert list(cloud["symbol"]) == ["3896.HK", "MSFT"]
    assert cloud["prev_date"].iloc[0] == date(2025, 1, 24) and type(cloud["prev_date"].iloc[0]) is date
    nvda = load_stock_moves(symbols="NVDA", markets=["US"], data_dir=data_dir)
    assert nvda.set_index("date").loc[date(2025, 1, 27), "ret"] == pytest.approx(-0.17)

    moves = load_sector_moves("2025-01-28", "2025-01-31", regions=["HK", "US"], sectors="cloud", data_dir=data_dir)
    assert list(zip(moves["date"].map(lambda d: d.strftime("%m-%d")), moves["region"])) == [
        (d, r) for d in ("01-28", "01-29", "01-30", "01-31") for r in ("HK", "US")
    ]  # sorted by date, region, sector
    hk_closed = moves[(moves["region"] == "HK") & (moves["date"] >= date(2025, 1, 29))]
    assert not hk_closed["market_open"].any() and hk_closed["ret_ew"].isna().all()
    assert type(moves["date"].iloc[0]) is date and not isinstance(moves["region"].dtype, pd.CategoricalDtype)


def test_missing_dataset_is_empty_and_missing_dir_is_an_error(data_dir: Path, tmp_path: Path) -> None:
    fx = load_fx(currencies="hkd", data_dir=data_dir)
    assert fx.empty and list(fx.columns) == FX.schema.names and fx["date"].dtype == object
    quarantine = load_quarantine("2025-01-01", data_dir=data_dir)
    assert quarantine.empty and list(quarantine.columns) == QUARANTINE_PRICES.schema.names
    with pytest.raises(AimovesError, match=r"data dir .*nowhere does not exist"):
        load_prices(data_dir=tmp_path / "nowhere")
    with pytest.raises(AimovesError, match="unknown JP"):
        load_prices(markets=["JP"], data_dir=data_dir)
    with pytest.raises(AimovesError, match="not a date"):
        load_prices("2025-13-01", data_dir=data_dir)


def test_cumulative_sector_move_skips_closed_days(data_dir: Path) -> None:
    # HK cloud 2025-01-27..2025-02-04: sessions 27, 28, (29-31 closed), Feb 3, Feb 4
    got = cumulative_sector_move("HK", "cloud", "2025-01-27", "2025-02-04", data_dir=data_dir)
    assert got == pytest.approx(1.10 * 1.05 * 1.08 * 0.98 - 1)
    # ALL compounds the USD return (the local column is null there)
    assert cumulative_sector_move("ALL", "cloud", "2025-01-24", "2025-01-28", data_dir=data_dir) == pytest.approx(1.01 * 1.03 * 1.02 - 1)
    with pytest.raises(AimovesError, match="no open session of HK/cloud"):
        cumulative_sector_move("HK", "cloud", "2025-01-29", "2025-01-31", data_dir=data_dir)


# --- event windows -------------------------------------------------------------------------------


def _series(window: pd.DataFrame, region: str, sector: str) -> pd.DataFrame:
    return window[(window["region"] == region) & (window["sector"] == sector)].set_index("offset")


def test_event_window_counts_each_regions_own_sessions(data_dir: Path) -> None:
    window = event_window(load_sector_moves(data_dir=data_dir), EVENT, before=2, after=3)
    hk = _series(window, "HK", "cloud")
    assert list(hk.index) == [-2, -1, 0, 1, 2, 3]
    assert [d.strftime("%Y-%m-%d") for d in hk["date"]] == ["2025-01-23", "2025-01-24", "2025-01-27", "2025-01-28", "2025-02-03", "2025-02-04"]
    assert hk.loc[-1, "cum"] == 0.0
    assert hk.loc[-2, "cum"] == pytest.approx(1 / 0.99 - 1)  # P_-2 / P_-1 - 1
    assert hk.loc[0, "cum"] == pytest.approx(0.10)
    assert hk.loc[2, "cum"] == pytest.approx(1.10 * 1.05 * 1.08 - 1)
    assert hk.loc[3, "cum"] == pytest.approx(1.10 * 1.05 * 1.08 * 0.98 - 1)
    us = _series(window, "US", "semiconductors")
    assert us.loc[2, "date"] == pd.Timestamp("2025-01-29") and us.loc[0, "ret"] == pytest.approx(-0.17)
    assert us.loc[3, "cum"] == pytest.approx(_compound(-0.17, 0.05, -0.03, 0.01))
    cn = _series(window, "CN", "cloud")  # CN closed 01-28..02-04: +1 is 02-05
    assert cn.loc[1, "date"] == pd.Timestamp("2025-02-05")
    assert _series(window, "ALL", "cloud").loc[1, "cum"] == pytest.approx(1.03 * 1.02 - 1)  # USD column for ALL


def test_event_on_a_closed_day_starts_at_the_next_session(data_dir: Path) -> None:
    window = event_window(load_sector_moves(data_dir=data_dir), "2025-01-30", before=1, after=1)
    hk = _series(window, "HK", "cloud")
    assert hk.loc[-1, "date"] == pd.Timestamp("2025-01-28") and hk.loc[0, "date"] == pd.Timestamp("2025-02-03")
    assert hk.loc[0, "cum"] == pytest.approx(0.08) and hk.loc[1, "cum"] == pytest.approx(1.08 * 0.98 - 1)
    assert _series(window, "US", "semiconductors").loc[0, "date"] == pd.Timestamp("2025-01-30")


def test_window_moves_start_from_the_first_sessions_return(data_dir: Path) -> None:
    moves = window_moves(load_sector_moves(data_dir=data_dir), "2025-01-27", "2025-02-03")
    hk = _series(moves, "HK", "cloud")
    assert list(hk.index) == [0, 1, 2] and hk.loc[0, "cum"] == pytest.approx(0.10)
    assert hk.loc[2, "cum"] == pytest.approx(1.10 * 1.05 * 1.08 - 1)
    assert _series(moves, "CN", "cloud").index.tolist() == [0]  # one CN session in the window


# --- the report and the CLI ----------------------------------------------------------------------


def test_write_report_event(data_dir: Path, tmp_path: Path) -> None:
    files = write_report(data_dir, tmp_path / "reports", event="2025-01-27", before=2, after=3)
    assert files.png.name == "event-2025-01-27.png" and files.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert files.png.stat().st_size > 20_000
    md, page = files.markdown.read_text(), files.html.read_text()
    hk_row = next(line for line in md.splitlines() if line.startswith("| cloud | HK |"))
    assert hk_row == "| cloud | HK | 2025-01-27 | +10.00% | +15.50% | {} |".format(f"{(1.10 * 1.05 * 1.08 * 0.98 - 1) * 100:+.2f}%")
    assert "| cum +1 | cum +3 |" in md  # +5 is past --after 3
    us_row = next(line for line in md.splitlines() if line.startswith("| semiconductors | US |"))
    assert "-17.00%" in us_row and f"{_compound(-0.17, 0.05) * 100:+.2f}%" in us_row
    assert "+10.00%" in page and "-17.00%" in page and "event-2025-01-27.png" in page
    assert HEADLINES_MARKER in md and HEADLINES_MARKER in page


def test_write_report_window_and_errors(data_dir: Path, tmp_path: Path) -> None:
    files = write_report(data_dir, tmp_path / "r", start="2025-01-27", end="2025-02-03")
    assert files.markdown.name == "window-2025-01-27-2025-02-03.md" and files.png.stat().st_size > 0
    assert f"| cloud | HK | 2025-01-27 | 2025-02-03 | 3 | +10.00% | {(1.10 * 1.05 * 1.08 - 1) * 100:+.2f}% |" in files.markdown.read_text()
    with pytest.raises(AimovesError, match=r"no rows from 2026-01-05 to 2026-01-09.*covers 2025-01-13 to 2025-02-14"):
        write_report(data_dir, tmp_path / "r", start="2026-01-05", end="2026-01-09")
    with pytest.raises(AimovesError, match="no session on or after 2025-03-10"):
        write_report(data_dir, tmp_path / "r", event="2025-03-10")
    with pytest.raises(AimovesError, match="not both"):
        write_report(data_dir, tmp_path / "r", event="2025-01-27", start="2025-01-20", end="2025-02-03")


def test_cli_report(data_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli-out"
    result = runner.invoke(app, ["report", "--event", "2025-01-27", "--after", "5", "--data-dir", str(data_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "event-2025-01-27.png" in result.stdout and (out / "event-2025-01-27.html").stat().st_size > 0
    result = runner.invoke(app, ["report", "--start", "2025-01-20", "--end", "2025-02-03", "--data-dir", str(data_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "window-2025-01-20-2025-02-03.md").is_file()

    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["report", "--event", "2025-01-27", "--data-dir", str(empty), "--out", str(out)])
    assert result.exit_code == 1 and "no sector_moves dataset in" in " ".join(result.stderr.split())
    result = runner.invoke(app, ["report", "--event", "2025-01-27", "--data-dir", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "no data dir here" in " ".join(result.stderr.split())  # as status does (w-cli: exit 2)

    for args, message in (
        (["--event", "2025-01-27", "--start", "2025-01-20", "--end", "2025-02-03"], "not both"),
        ([], "give --event DATE, or --start DATE --end DATE"),
        (["--start", "2025-01-20"], "needs both --start and --end"),
        (["--start", "2025-01-20", "--end", "2025-02-03", "--after", "3"], "--before/--after go with --event"),
        (["--event", "2025-02-30"], "is not a date"),
    ):
        result = runner.invoke(app, ["report", *args, "--data-dir", str(data_dir), "--out", str(out)])
        assert result.exit_code == 2, (args, result.output)
        assert message in " ".join(result.stderr.split()), (args, result.stderr)
