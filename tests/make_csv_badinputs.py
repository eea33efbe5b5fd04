"""Rebuilds the CSV cases of tests/badinputs/ added for issues 9 and 10 (run from the repo root).

Each case is NVDA's good file of 2025-01-27..2025-02-07 (the corpus' base) with one defect.
"""

from __future__ import annotations

import csv
from pathlib import Path

CORPUS = Path(__file__).parent / "badinputs"
HEADER = "Date,Open,High,Low,Close,Adj Close,Volume"
ROWS = [
    ("2025-01-27", "118.42", "119.60", "117.24", "118.42", "118.42", "200000000"),
    ("2025-01-28", "128.99", "130.28", "127.70", "128.99", "128.99", "200000000"),
    ("2025-01-29", "123.70", "124.94", "122.46", "123.70", "123.70", "200000000"),
    ("2025-01-30", "124.65", "125.90", "123.40", "124.65", "124.65", "200000000"),
    ("2025-01-31", "120.07", "121.27", "118.87", "120.07", "120.07", "200000000"),
    ("2025-02-03", "116.66", "117.83", "115.49", "116.66", "116.66", "200000000"),
    ("2025-02-04", "118.65", "119.84", "117.46", "118.65", "118.65", "200000000"),
    ("2025-02-05", "124.83", "126.08", "123.58", "124.83", "124.83", "200000000"),
    ("2025-02-06", "128.68", "129.97", "127.39", "128.68", "128.68", "200000000"),
    ("2025-02-07", "129.84", "131.14", "128.54", "129.84", "129.84", "200000000"),
]


def _dated(fmt: str) -> list[str]:
    return [",".join((f"{fmt.format(y=d[:4], m=d[5:7], d=d[8:10])}", *rest)) for d, *rest in ROWS]


def _one_bad(line: str, index: int = 2) -> list[str]:
    rows = [",".join(r) for r in ROWS]
    rows[index] = line
    return rows


def cases() -> dict[str, list[str]]:
    third = ",".join(ROWS[2])
    return {
        "csv_day_first_dates.csv": [HEADER, *_dated("{d}/{m}/{y}")],
        "csv_month_first_dates.csv": [HEADER, *_dated("{m}/{d}/{y}")],
        "csv_month_name_dates.csv": [HEADER, *[",".join((f"{int(d[8:10])} {['Jan', 'Feb'][int(d[5:7]) - 1]} {d[:4]}", *rest)) for d, *rest in ROWS]],
        "csv_ambiguous_day_month.csv": [HEADER, *_dated("{d}/{m}/{y}")[5:]],
        "csv_mixed_day_month_order.csv": [HEADER, *_dated("{d}/{m}/{y}")[:3], *_dated("{m}/{d}/{y}")[3:]],
        "csv_unparseable_date.csv": [HEADER, *_one_bad(third.replace("2025-01-29", "yesterday"))],
        "csv_year_1000_date.csv": [HEADER, *_one_bad(third.replace("2025-01-29", "1000-01-29"))],
        "csv_year_99999_date.csv": [HEADER, *_one_bad(third.replace("2025-01-29", "99999-01-29"))],
        "csv_infinite_price.csv": [HEADER, *_one_bad(third.replace("123.70,123.70,", "inf,inf,"))],
        "csv_price_1e308.csv": [HEADER, *_one_bad(third.replace("123.70,123.70,", "1e308,1e308,"))],
        "csv_volume_beyond_int64.csv": [HEADER, *_one_bad(third.replace(",200000000", ",99999999999999999999"))],
        "csv_field_over_limit.csv": [HEADER, *_one_bad(third.replace(",200000000", "," + "9" * (csv.field_size_limit() + 10)))],
        "csv_extra_field.csv": [HEADER, *_one_bad(third + ",12")],
        "csv_short_line.csv": [HEADER, *_one_bad("2025-01-29,123.70")],
        "csv_unclosed_quote.csv": [HEADER, *_one_bad(third.replace("2025-01-29,", '2025-01-29,"'))],
        "csv_no_adj_close_any_order.csv": ["Date,Close,High,Low,Open,Volume", *[",".join((r[0], r[4], r[2], r[3], r[1], r[6])) for r in ROWS]],
        "csv_adjusted_close_spelling.csv": [HEADER.replace("Adj Close", "Adjusted Close"), *[",".join(r) for r in ROWS]],
        "csv_adj_close_lookalike.csv": [HEADER.replace("Adj Close", "Close (adj)"), *[",".join(r) for r in ROWS]],
    }


if __name__ == "__main__":
    for name, lines in cases().items():
        (CORPUS / name).write_text("\n".join(lines) + "\n")
        print(name)
