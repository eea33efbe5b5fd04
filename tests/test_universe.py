from __future__ import annotations

import pytest

from aimoves.errors import ConfigError
from aimoves.markets import normalize_symbol, symbol_problem
from aimoves.universe import SECTORS, load_universe, parse_universe


def test_default_universe_covers_three_markets_and_all_sectors() -> None:
    u = load_universe()
    assert 35 <= len(u.stocks) <= 60
    assert {s.market for s in u.stocks} == {"US", "HK", "CN"}
    assert {s.sector for s in u.stocks} == set(SECTORS)
    assert set(u.benchmarks) == {"US", "HK", "CN"}
    assert set(u.fx) == {"HKD", "CNY"}
    # dual listings are linked by company
    by_company = {}
    for s in u.stocks:
        by_company.setdefault(s.company_key, []).append(s.symbol)
    assert sorted(by_company["alibaba"]) == ["9988.HK", "BABA"]


def test_symbols_by_market_adds_the_benchmark() -> None:
    u = load_universe()
    assert u.symbols_by_market(["HK"])["HK"][-1] == "^HSI"


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [("981.hk", "0981.HK"), ("00981.HK", "0981.HK"), ("688981.SH", "688981.SS"), ("nvda", "NVDA"), ("^hsi", "^HSI")],
)
def test_symbol_normalization(raw: str, canonical: str) -> None:
    assert normalize_symbol(raw) == canonical


@pytest.mark.parametrize("bad", ["../etc/passwd", "a/b", "NV..DA", "C:\\x", "NV DA", ""])
def test_bad_symbols_are_rejected(bad: str) -> None:
    assert symbol_problem(bad.upper()) is not None


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_universe(text, "u.yaml")
    return str(info.value)


def test_error_names_file_line_entry_and_field() -> None:
    msg = _error(
        "stocks:\n"
        "  - {symbol: NVDA, name: NVIDIA, market: US, sector: semiconductors}\n"
        "  - symbol: AMD\n"
        "    name: AMD\n"
        "    market: US\n"
        "    sector: chips\n"
    )
    assert "u.yaml, line 6" in msg
    assert "stocks[1] (AMD).sector" in msg
    assert "semiconductors" in msg  # says what is allowed


def test_path_separator_in_symbol_is_rejected_with_its_line() -> None:
    msg = _error("stocks:\n  - {symbol: ../x, name: X, market: US, sector: cloud}\n")
    assert "line 2" in msg and "path separator" in msg


def test_duplicate_symbol_is_rejected() -> None:
    msg = _error(
        "stocks:\n"
        "  - {symbol: NVDA, name: A, market: US, sector: cloud}\n"
        "  - {symbol: nvda, name: B, market: US, sector: cloud}\n"
    )
    assert "NVDA is listed twice" in msg


def test_unknown_field_and_bad_market() -> None:
    msg = _error("stocks:\n  - {symbol: NVDA, name: A, market: JP, sector: cloud, colour: red}\n")
    assert "market" in msg and "colour" in msg


def test_not_yaml_and_missing_file(tmp_path) -> None:
    assert "not valid YAML" in _error("stocks: [\n")
    with pytest.raises(ConfigError, match="not found"):
        load_universe(tmp_path / "nope.yaml")
