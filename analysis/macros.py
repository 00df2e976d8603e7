"""The SQL macros of ``nova sql`` (and the notebook): the contract's rules for researchers who speak SQL.

``install`` registers them on a DuckDB connection whose views (``book``, ``bbo``, ``events``, ...) exist.
"""

from __future__ import annotations

import duckdb

MACROS = [
    # The grid's instants are step-aligned from t0, so only two kinds of quote can be the last one at or before
    # an instant: the last quote of each step-long bucket (and the last one before t0), and a quote received
    # exactly at an instant. Keeping only those (one hash aggregate over the receive times) leaves the ASOF
    # join ~2 quotes per instant to sort instead of the whole day's quotes: the same rows, about twice as fast.
    # Steps with calendar parts (days, months: their length depends on the date and time zone) keep every quote.
    """CREATE MACRO top_of_book(mkt, sym, t0, t1, step) AS TABLE
    WITH grid AS (SELECT unnest(generate_series(t0::TIMESTAMPTZ, t1::TIMESTAMPTZ - step::INTERVAL,
                                                step::INTERVAL)) AS ts),
         q AS NOT MATERIALIZED (
               SELECT ts_recv, bid_price, bid_amount, ask_price, ask_amount FROM bbo
               WHERE market = mkt AND symbol = sym
                 AND date BETWEEN timezone('UTC', t0::TIMESTAMPTZ - INTERVAL 1 DAY)::DATE
                                  AND timezone('UTC', t1::TIMESTAMPTZ)::DATE
                 AND ts_recv < t1::TIMESTAMPTZ),
         k AS (SELECT ts_recv, epoch_ns(ts_recv) - epoch_ns(t0::TIMESTAMPTZ) AS off,
                      epoch_ns(t0::TIMESTAMPTZ + step::INTERVAL) - epoch_ns(t0::TIMESTAMPTZ) AS step_ns,
                      date_part('year', step::INTERVAL) <> 0 OR date_part('month', step::INTERVAL) <> 0
                          OR date_part('day', step::INTERVAL) <> 0 AS calendar
               FROM q),
         marks AS (SELECT max(ts_recv) AS ts_recv FROM k
                   GROUP BY CASE WHEN calendar THEN off WHEN off < 0 THEN -1 ELSE off // step_ns END,
                            off >= 0 AND off % step_ns = 0),
         candidates AS (SELECT * FROM q WHERE ts_recv IN (SELECT ts_recv FROM marks))
    SELECT grid.ts, c.bid_price, c.bid_amount, c.ask_price, c.ask_amount, c.ts_recv AS quote_ts
    FROM grid ASOF LEFT JOIN candidates c ON grid.ts >= c.ts_recv ORDER BY grid.ts""",
    # Which messages are in effect at t: those before the first message received after t (``f``). Found with
    # narrow scans that Parquet statistics prune: m = the last message received by t; f is looked for only
    # among messages up to m (normally there is none, and everything up to m counts); the last snapshot by
    # t. Only the levels of the messages from that snapshot on are then read (row groups pruned on msg).
    """CREATE MACRO book_at(mkt, sym, t, n) AS TABLE
    WITH keys AS NOT MATERIALIZED (
               SELECT ts_recv, msg, snapshot FROM book WHERE market = mkt AND symbol = sym
               AND date <= timezone('UTC', t::TIMESTAMPTZ)::DATE),
         upto_t AS (SELECT max(msg) AS m FROM keys WHERE ts_recv <= t::TIMESTAMPTZ),
         snap_t AS (SELECT max(msg) AS s FROM keys WHERE snapshot AND ts_recv <= t::TIMESTAMPTZ),
         early AS (SELECT f FROM (SELECT min(msg) AS f FROM keys, upto_t
                                  WHERE keys.ts_recv > t::TIMESTAMPTZ AND keys.msg <= upto_t.m)
                   WHERE f IS NOT NULL),
         fixed AS (SELECT max(msg) AS last_msg, max(msg) FILTER (WHERE snapshot) AS snap_msg
                   FROM keys JOIN early ON keys.msg < early.f WHERE keys.ts_recv <= t::TIMESTAMPTZ),
         span AS (SELECT CASE WHEN e.any THEN fixed.last_msg ELSE upto_t.m END AS last_msg,
                         CASE WHEN e.any THEN fixed.snap_msg ELSE snap_t.s END AS snap_msg
                  FROM upto_t, snap_t, fixed, (SELECT EXISTS (SELECT 1 FROM early) AS any) e),
         live AS (SELECT r.side, r.price, r.amount, r.msg,
                         row_number() OVER (PARTITION BY r.side, r.price ORDER BY r.msg DESC) AS latest
                  FROM book r, span
                  WHERE r.market = mkt AND r.symbol = sym AND r.date <= timezone('UTC', t::TIMESTAMPTZ)::DATE
                    AND r.ts_recv <= t::TIMESTAMPTZ AND r.msg >= span.snap_msg AND r.msg <= span.last_msg
                    AND NOT r.stale AND r.side IS NOT NULL),
         levels AS (SELECT side, price, amount,
                           row_number() OVER (PARTITION BY side ORDER BY
                               CASE WHEN side = 'bid' THEN -price ELSE price END) AS level
                    FROM live WHERE latest = 1 AND amount > 0)
    SELECT side, level, price, amount FROM levels WHERE level <= n ORDER BY side DESC, level""",
    """CREATE MACRO basis(sym, t0, t1, step) AS TABLE
    SELECT s.ts, (s.bid_price + s.ask_price) / 2 AS spot_mid, (p.bid_price + p.ask_price) / 2 AS perp_mid,
           ((p.bid_price + p.ask_price) / (s.bid_price + s.ask_price) - 1) * 1e4 AS basis_bps
    FROM top_of_book('spot', sym, t0, t1, step) s JOIN top_of_book('perp', sym, t0, t1, step) p USING (ts)
    ORDER BY s.ts""",
]


def install(con: duckdb.DuckDBPyConnection, present: list[str]) -> None:
    """Create every macro whose views are present."""
    for macro in MACROS:
        needed = ["bbo"] if "FROM bbo" in macro or "top_of_book(" in macro else ["book"]
        if all(t in present for t in needed):
            con.execute(macro)
