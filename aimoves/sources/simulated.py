"""A deterministic, seeded offline market for the demo, the tests and the benchmark.

Daily returns follow a factor model: a global AI factor, a market factor, a (market, sector)
factor and fat-tailed (Student-t, 4 d.o.f.) idiosyncratic noise. Every series starts at a fixed
epoch and is drawn from generators seeded by (seed, symbol), so a symbol's bar on a date is the
same whatever range or universe asked for it. Sessions come from each exchange's real calendar.

On the shock day (default 2025-01-27, DeepSeek R1) US semiconductors fall sharply, the rest of US
AI falls less, and HK/CN AI names rally; HK/CN keep a drift up for the next sessions.

`inject_defects=True` adds, for the first stock of each market in the window: a negative price, an
identical duplicate row, a 100x unit glitch and a zero-volume bar among its last 10 sessions, and a bar
on an exchange holiday when the window's last weeks hold one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa

from aimoves.calendars import sessions
from aimoves.sources.base import PriceBatch, PriceRequest, RawPayload, missing_symbols

EPOCH = date(2005, 1, 3)
DEFAULT_SEED = 20250127
DEFAULT_SHOCK = date(2025, 1, 27)

# Shock-day sector moves per market (added to the factor return), then a daily drift for 5 sessions.
SHOCK = {
    "US": {"semiconductors": -0.15, "hardware": -0.09, "cloud": -0.04, "ai_software": -0.03, "internet_platforms": -0.02},
    "HK": {"semiconductors": 0.07, "hardware": 0.03, "cloud": 0.12, "ai_software": 0.08, "internet_platforms": 0.05},
    "CN": {"semiconductors": 0.05, "hardware": 0.03, "cloud": 0.06, "ai_software": 0.07, "internet_platforms": 0.04},
}
AFTERMATH_DRIFT = {"US": -0.002, "HK": 0.012, "CN": 0.006}
AFTERMATH_SESSIONS = 5


def _rng(*key: object) -> np.random.Generator:
    digest = hashlib.blake2b("|".join(map(str, key)).encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


@dataclass(frozen=True)
class SimulatedSource:
    """Prices for any symbol, labelled `simulated`; `sectors` maps symbol → sector (unknown: 'ai_software')."""

    sectors: dict[str, str]
    seed: int = DEFAULT_SEED
    shock_date: date | None = DEFAULT_SHOCK
    inject_defects: bool = False
    name: str = "simulated"

    def fetch_prices(self, request: PriceRequest) -> PriceBatch:
        bars = simulate_bars(request, self.sectors, self.seed, self.shock_date)
        if self.inject_defects and len(bars) and request.market != "FX":
            bars = _inject_defects(bars, request)
        table = pa.Table.from_pandas(bars, preserve_index=False)
        return PriceBatch(
            source=self.name,
            request=request,
            bars=bars,
            payloads=[RawPayload(f"{request.market}.parquet", "table", table)],
            failures=missing_symbols(request, bars, []),
        )


def _factor(key: tuple, n: int, vol: float) -> np.ndarray:
    return _rng(*key).standard_t(5, size=n) * vol * np.sqrt(3 / 5)


def simulate_bars(request: PriceRequest, sectors: dict[str, str], seed: int, shock_date: date | None) -> pd.DataFrame:
    """Yahoo-long-form bars for `request`, from the seeded factor model."""
    market = request.market
    if request.end < EPOCH:
        return pd.DataFrame(columns=["Date", "Ticker", "Open", "High", "Low", "Close", "Adj Close", "Volume"])
    if market == "FX":
        return simulate_fx(request, seed)
    cal = sessions(market, EPOCH, request.end)
    days = cal.dates
    n = len(days)
    keep = days >= pd.Timestamp(request.start)
    global_f = _factor((seed, "global"), n, 0.008)
    market_f = _factor((seed, "market", market), n, 0.009)

    shock_idx = None
    if shock_date is not None:
        after = np.flatnonzero(days >= pd.Timestamp(shock_date))
        shock_idx = int(after[0]) if len(after) else None

    # Per symbol only numpy arrays; one frame at the end (a frame per symbol was most of a short request's time).
    columns: dict[str, list[np.ndarray]] = {c: [] for c in ("Open", "High", "Low", "Close", "Volume")}
    tickers: list[str] = []
    sector_cache: dict[str, np.ndarray] = {}
    for symbol in request.symbols:
        is_index = symbol.startswith("^") or symbol == "000300.SS"
        sector = sectors.get(symbol, "ai_software")
        if sector not in sector_cache:
            sf = _factor((seed, "sector", market, sector), n, 0.011)
            if shock_idx is not None:
                sf = sf.copy()
                sf[shock_idx] += SHOCK[market].get(sector, 0.0)
                sf[shock_idx + 1 : shock_idx + 1 + AFTERMATH_SESSIONS] += AFTERMATH_DRIFT[market]
            sector_cache[sector] = sf
        # One generator per stream: a stream's first k draws never depend on how many follow.
        rng = _rng(seed, "stock", symbol)
        beta_m, beta_s, p0, vol = rng.uniform(0.7, 1.3), rng.uniform(0.5, 1.2), rng.uniform(5, 400), rng.uniform(0.008, 0.025)
        idio = _rng(seed, "idio", symbol).standard_t(4, size=n) * vol / np.sqrt(2)
        if is_index:
            ret = global_f * 0.6 + market_f
            if shock_idx is not None:
                ret[shock_idx] += float(np.mean(list(SHOCK[market].values()))) * 0.3
        else:
            ret = 0.0003 + global_f + beta_m * market_f + beta_s * sector_cache[sector] + idio
        ret = np.clip(ret, -0.6, 1.5)
        close = p0 * np.cumprod(1 + ret)
        prev = np.r_[p0, close[:-1]]
        open_ = prev * (1 + _rng(seed, "gap", symbol).normal(0, 0.004, n))
        high = np.maximum(open_, close) * (1 + np.abs(_rng(seed, "high", symbol).normal(0, 0.008, n)))
        low = np.minimum(open_, close) * (1 - np.abs(_rng(seed, "low", symbol).normal(0, 0.008, n)))
        volume = np.round(_rng(seed, "volume", symbol).lognormal(15, 0.5, n) * (1 + 5 * np.abs(ret))).astype("int64")
        for name, values in (("Open", open_), ("High", high), ("Low", low), ("Close", close), ("Volume", volume)):
            columns[name].append(values[keep])
        tickers.append(symbol)
    if not tickers:
        return pd.DataFrame(columns=["Date", "Ticker", "Open", "High", "Low", "Close", "Adj Close", "Volume"])
    per_symbol = int(keep.sum())
    close_all = np.concatenate(columns["Close"]).round(4)
    return pd.DataFrame(
        {
            "Date": np.tile(days[keep].to_numpy(), len(tickers)),
            "Ticker": pd.Series(np.repeat(np.array(tickers, dtype=object), per_symbol), dtype="str"),
            "Open": np.concatenate(columns["Open"]).round(4),
            "High": np.concatenate(columns["High"]).round(4),
            "Low": np.concatenate(columns["Low"]).round(4),
            "Close": close_all,
            "Adj Close": close_all.copy(),
            "Volume": np.concatenate(columns["Volume"]),
        }
    )


# Simulated USD value of one unit: HKD held in its 7.75–7.85 band, CNY drifting around 7.2 per USD.
FX_BASE = {"HKD": (1 / 7.80, 0.0004), "CNY": (1 / 7.15, 0.0015)}


def simulate_fx(request: PriceRequest, seed: int) -> pd.DataFrame:
    """Daily FX bars (weekdays) for symbols like HKDUSD=X: USD per unit of the currency."""
    days = pd.bdate_range(EPOCH, request.end)
    keep = days >= pd.Timestamp(request.start)
    frames = []
    for symbol in request.symbols:
        currency = symbol[:3]
        base, vol = FX_BASE.get(currency, (1.0, 0.003))
        steps = _rng(seed, "fx", symbol).normal(0, vol, len(days))
        level = np.cumsum(steps)
        if currency == "HKD":  # NOTE: pegged: mean-reverting inside the band, not a random walk
            level = np.clip(steps.cumsum() * 0.05, -0.006, 0.006)
        rate = base * np.exp(level)
        inverse = symbol.startswith("USD") or (len(symbol) == 5 and symbol.endswith("=X"))
        value = 1 / rate if inverse else rate
        frames.append(
            pd.DataFrame(
                {"Date": days[keep], "Ticker": symbol, "Open": value[keep], "High": value[keep] * 1.0005, "Low": value[keep] * 0.9995,
                 "Close": value[keep], "Adj Close": value[keep], "Volume": 0}
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["Date", "Ticker", "Open", "High", "Low", "Close", "Adj Close", "Volume"])


def _inject_defects(bars: pd.DataFrame, request: PriceRequest) -> pd.DataFrame:
    """Deterministic defects on the first symbol of the request, in its last sessions."""
    symbol = request.symbols[0]
    rows = bars.index[bars["Ticker"] == symbol]
    if len(rows) < 12:
        return bars
    bars = bars.copy()
    r_neg, r_dup, r_glitch, r_zero = rows[-9], rows[-7], rows[-5], rows[-3]
    bars.loc[r_neg, "Low"] = -abs(bars.loc[r_neg, "Low"])
    bars.loc[r_glitch, ["Open", "High", "Low", "Close", "Adj Close"]] *= 100
    bars.loc[r_zero, "Volume"] = 0
    extra = [bars.loc[[r_dup]]]
    # A bar on the last weekday of the window that is not a session (a holiday).
    s = sessions(request.market, request.start, request.end)
    weekdays = pd.bdate_range(bars.loc[rows[-12], "Date"], request.end)
    holidays = weekdays[~weekdays.isin(s.dates)]
    if len(holidays):
        bar = bars.loc[[rows[-1]]].copy()
        bar["Date"] = holidays[-1]
        extra.append(bar)
    out = pd.concat([bars, *extra], ignore_index=True)
    return out.sort_values(["Ticker", "Date"], kind="stable").reset_index(drop=True)
