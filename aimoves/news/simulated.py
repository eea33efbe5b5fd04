"""Deterministic headlines for the simulated market (`aimoves.sources.simulated`).

The headlines follow the simulated prices: for every session of every market in the window,
one or two stocks (drawn from a generator seeded by seed, market and date) get a headline whose
verb matches their simulated return that session ("jump", "rise", "little changed", "fall",
"tumble"), published 30-90 minutes before that session's close, so the news joins the session it
describes. Some sessions also get a market-wide item that names no stock.

On the shock session of each market (the first session on or after `shock_date`), the three
biggest simulated movers get shock headlines ("Nvidia shares plunge as DeepSeek's cheap AI model
rattles chip stocks", "Kingsoft Cloud soars as DeepSeek spurs China AI rally"), and a market-wide
item about the model is published the day before (a weekend item for the default 2025-01-27,
which rolls to Monday's sessions).

Everything is labelled `source = "simulated"`, publisher "aimoves simulated wire", URLs under
`https://news.simulated.invalid/`; `fetched_at` is publication + 5 minutes, so a re-run of the
same window reproduces the same rows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd

from aimoves.calendars import sessions
from aimoves.errors import AimovesError
from aimoves.markets import MARKETS
from aimoves.news.base import NewsBatch, NewsPayload, NewsRequest, items_frame
from aimoves.news.join import session_closes
from aimoves.sources.base import PriceRequest
from aimoves.sources.simulated import DEFAULT_SEED, DEFAULT_SHOCK, simulate_bars
from aimoves.universe import Stock, Universe

PUBLISHER = "aimoves simulated wire"
URL_ROOT = "https://news.simulated.invalid"
FETCH_DELAY = timedelta(minutes=5)

SHOCK_DOWN = [
    "{name} shares plunge as DeepSeek's cheap AI model rattles chip stocks",
    "{name} tumbles {pct} as DeepSeek fears hit AI spending bets",
    "{name} slides {pct} in AI sell-off sparked by DeepSeek",
]
SHOCK_UP = [
    "{name} soars as DeepSeek spurs China AI rally",
    "{name} jumps {pct} as DeepSeek lifts Chinese AI stocks",
    "{name} surges {pct} on bets DeepSeek boosts domestic AI demand",
]
DAILY = [
    (0.03, "{name} shares jump {pct} in heavy trading"),
    (0.005, "{name} shares rise {pct} as investors weigh AI demand"),
    (-0.005, "{name} shares little changed as traders await AI spending news"),
    (-0.03, "{name} shares fall {pct} as traders trim positions"),
    (-np.inf, "{name} shares tumble {pct} in broad tech sell-off"),
]
MARKET_WIDE = {
    "US": "Wall Street tech stocks mixed as investors weigh AI outlook",
    "HK": "Hong Kong tech shares mixed ahead of mainland data",
    "CN": "Mainland tech shares mixed as traders watch policy signals",
}
SHOCK_EVE = "Chinese startup DeepSeek's low-cost R1 model shakes up the global AI race"


def _rng(*key: object) -> np.random.Generator:
    digest = hashlib.blake2b("|".join(map(str, key)).encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def _display_name(stock: Stock) -> str:
    """The name a headline would use: the first alias when the universe gives one (Nvidia, SMIC)."""
    return stock.aliases[0] if stock.aliases else " ".join(stock.name.split("(")[0].split())


def _slug(text: str) -> str:
    return "-".join("".join(c.lower() if c.isalnum() else " " for c in text).split())[:80]


def _pct(ret: float) -> str:
    return f"{abs(ret) * 100:.1f}%"


def _returns(market: str, stocks: list[Stock], start: date, end: date, seed: int, shock: date | None) -> pd.DataFrame:
    request = PriceRequest(market, tuple(s.symbol for s in stocks), start - timedelta(days=20), end)
    bars = simulate_bars(request, {s.symbol: s.sector for s in stocks}, seed, shock)
    if bars.empty:
        return pd.DataFrame()
    close = bars.pivot_table(index="Date", columns="Ticker", values="Close")
    return close.pct_change()


def _item(market: str, day: date, title: str, published: pd.Timestamp, symbols: list[str], summary: str, kind: str) -> dict:
    return {
        "source": "simulated",
        "source_shape": "simulated",
        "title": title,
        "summary": summary,
        "publisher": PUBLISHER,
        "link": f"{URL_ROOT}/{market.lower()}/{day:%Y/%m/%d}/{kind}-{_slug(title)}",
        "published_at": published,
        "published_raw": published.isoformat(),
        "fetched_at": published + FETCH_DELAY,
        "related": symbols,
        "origin": "simulated",
        "item_flags": [],
    }


def simulate_news(universe: Universe, start: date, end: date, seed: int = DEFAULT_SEED, shock_date: date | None = DEFAULT_SHOCK) -> list[dict]:
    """Item records (`ITEM_COLUMNS`) for sessions from `start` to `end`; see the module docstring."""
    records: list[dict] = []
    for market in MARKETS:
        stocks = [s for s in universe.stocks if s.market == market]
        if not stocks:
            continue
        days = sessions(market, start, end).dates
        if len(days) == 0:
            continue
        returns = _returns(market, stocks, start, end, seed, shock_date)
        closes = session_closes(market, days[0].date(), days[-1].date())
        by_symbol = {s.symbol: s for s in stocks}
        shock_session = None
        if shock_date is not None:
            after = sessions(market, shock_date, shock_date + timedelta(days=20)).dates
            shock_session = after[0] if len(after) else None
        for day in days:
            close = closes.get(day)
            if close is None or returns.empty or day not in returns.index:
                continue
            rets = returns.loc[day].dropna()
            rng = _rng(seed, "news", market, day.date().isoformat())
            if shock_session is not None and day == shock_session:
                movers = rets.reindex(list(by_symbol)).dropna().abs().sort_values(ascending=False, kind="stable").index[:3]
                for rank, symbol in enumerate(movers):
                    stock, ret = by_symbol[symbol], float(rets[symbol])
                    template = (SHOCK_DOWN if ret < 0 else SHOCK_UP)[rank]
                    title = template.format(name=_display_name(stock), pct=_pct(ret))
                    published = close - pd.Timedelta(minutes=150 - 30 * rank)
                    summary = f"{stock.name} ({symbol}) moved {_pct(ret)} {'lower' if ret < 0 else 'higher'} in the simulated {market} session."
                    records.append(_item(market, day.date(), title, published, [symbol], summary, f"shock{rank}"))
                eve = pd.Timestamp(datetime.combine(shock_session.date() - timedelta(days=1), datetime.min.time()), tz=UTC) + pd.Timedelta(hours=18)
                if market == "US":
                    records.append(_item("world", shock_session.date(), SHOCK_EVE, eve, [], "A simulated market-wide item that names no listed company.", "eve"))
            k = 1 + int(rng.integers(0, 2))
            picks = rng.choice(len(stocks), size=min(k, len(stocks)), replace=False)
            for j, pick in enumerate(sorted(int(p) for p in picks)):
                stock = stocks[pick]
                if stock.symbol not in rets.index:
                    continue
                ret = float(rets[stock.symbol])
                template = next(t for floor, t in DAILY if ret >= floor)
                title = template.format(name=_display_name(stock), pct=_pct(ret))
                published = close - pd.Timedelta(minutes=30 + int(rng.integers(0, 60)))
                summary = f"{stock.name} ({stock.symbol}) moved {_pct(ret)} {'lower' if ret < 0 else 'higher'} in the simulated {market} session."
                records.append(_item(market, day.date(), title, published, [stock.symbol], summary, f"daily{j}"))
            if rng.random() < 0.3:
                published = close - pd.Timedelta(minutes=20)
                records.append(_item(market, day.date(), MARKET_WIDE[market], published, [], "A simulated market-wide item that names no listed company.", "wide"))
    records.sort(key=lambda r: (r["published_at"], r["link"]))
    return records


@dataclass(frozen=True)
class SimulatedNewsSource:
    """Headlines for the simulated market; needs a window (start, end)."""

    universe: Universe
    seed: int = DEFAULT_SEED
    shock_date: date | None = DEFAULT_SHOCK
    name: str = "simulated"

    def fetch_news(self, request: NewsRequest) -> NewsBatch:
        if request.start is None or request.end is None:
            raise AimovesError("simulated news needs a window: NewsRequest(start=..., end=...)")
        records = simulate_news(self.universe, request.start, request.end, self.seed, self.shock_date)
        wanted = set(request.symbols)
        if wanted:  # market-wide items stay; items about other stocks go
            records = [r for r in records if not r["related"] or set(r["related"]) & wanted]
        payload = json.dumps(
            [{**r, "published_at": r["published_at"].isoformat(), "fetched_at": r["fetched_at"].isoformat()} for r in records],
            indent=1,
        ).encode()
        meta = {"seed": self.seed, "shock_date": self.shock_date.isoformat() if self.shock_date else None}
        return NewsBatch(
            source=self.name,
            request=request,
            items=items_frame(records),
            fetched_at=datetime.now(UTC),
            payloads=[NewsPayload("simulated.json", "news_items_json", payload, meta)],
            notes=[f"simulated news: {len(records)} items, seed {self.seed}, shock {meta['shock_date']}"],
        )

