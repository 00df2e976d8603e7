"""The SQL macros of ``nova sql`` (and the notebook): the contract's rules for researchers who speak SQL.

``install`` registers them on a DuckDB connection whose views (``book``, ``bbo``, ``events``, ...) exist.

- ``top_of_book(mkt, sym, t0, t1, step)``: the best bid and ask (bookTicker, the freshest top Binance
  publishes) as of every ``step`` in ``[t0, t1)``, with the receive time of that quote, its age, and whether it
  is valid at that instant.
- ``book_at(mkt, sym, t, n)``: the depth book at ``t``, top ``n`` levels a side, rebuilt by the contract's
  rule from the last snapshot at or before ``t`` plus every later diff taking effect by ``t``; one row with
  ``valid = false`` and the reason when no valid book existed at ``t``.
- ``basis(sym, t0, t1, step)``: spot and perp mids and the basis in bps every ``step``, from the two
  ``top_of_book`` legs, with both legs' quote ages; NULL where either leg is not valid.

Validity is nova.core.validity's rule restated in SQL (the kind sets and reason phrases are generated from it, and
tests/test_validity.py holds the SQL to the Python on generated ledgers): a quote counts at ``t`` only if no
break of its stream (disconnect, error, stop, a new run's start) is ledgered at or after it and by ``t``;
a book likewise with the book's breaks (gap, disconnect, stop, start), counted from its last snapshot; and a
run without a ``stop`` (a killed recorder, or one still writing) ends at its last recorded row. So a macro
never answers with a quote from time nobody watched (say, across the hour between two recording runs): it
returns NULL prices, ``valid = false`` and the reason.

Symbols may be written as the CLI accepts them (``ETH/USDT``, ``ETHUSDT``, ``eth-usdt``, ``ETH/USDT:USDT``) and
markets as ``spot``/``perp`` in any case; anything else, or a symbol not recorded, stops the query with one
sentence. Partition dates are UTC dates: the macros prune them in UTC whatever the session's TimeZone.
"""

from __future__ import annotations

import duckdb

from nova.core.markets import KNOWN_QUOTES, MARKETS
from nova.core.validity import BOOK_ANCHOR, BOOK_BREAKS, END_OF_DATA, MOMENT, NO_SNAPSHOT, QUOTE_BREAKS, REASONS


def _lit(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def _sql_list(values: object) -> str:
    return ", ".join(_lit(str(v)) for v in sorted(values))  # type: ignore[call-overload]


def _reason_case(kind: str) -> str:
    """A CASE turning a break kind (column ``kind``) into the shared phrase of nova.core.validity.REASONS."""
    whens = " ".join(f"WHEN {_lit(k)} THEN {_lit(v)}" for k, v in REASONS.items())
    return f"CASE {kind} {whens} ELSE {kind} END"


def _split_quotes(u: str) -> str:
    """``ETHUSDT`` -> ``ETH-USDT`` for the quote assets nova.core.markets knows (longest first, as Symbol.parse)."""
    whens = " ".join(f"WHEN suffix({u}, '{q}') AND length({u}) > {len(q)} "
                     f"THEN left({u}, length({u}) - {len(q)}) || '-{q}'" for q in KNOWN_QUOTES)
    return f"CASE {whens} ELSE NULL END"


_U = "upper(trim(sym))"
RAW = "_nova_raw_"  # the prefix of the views of the tables' stored columns, which the macros read
NEVER = 2**63 - 1  # "no next run" as nanoseconds
HELPERS = [
    f"""CREATE MACRO nova_market(mkt) AS
    CASE WHEN lower(trim(mkt)) IN ({_sql_list(MARKETS)}) THEN lower(trim(mkt))
         ELSE error('market ''' || mkt || ''' is not spot or perp; write the market as ''spot'' or ''perp''') END""",
    f"""CREATE MACRO nova_spelled(sym) AS
    CASE WHEN regexp_full_match({_U}, '[A-Z0-9]+[/_-][A-Z0-9]+(:[A-Z0-9]+)?')
              THEN regexp_replace(regexp_replace({_U}, ':[A-Z0-9]+$', ''), '[/_]', '-')
         WHEN regexp_full_match({_U}, '[A-Z0-9]+') THEN {_split_quotes(_U)}
         ELSE NULL END""",
    # A filter on nova_spelled(sym) stays a constant, so partitions are pruned; the guard (is the symbol
    # recorded?) runs once, on the macro's final rows.
    """CREATE MACRO nova_guard(sym) AS
    CASE WHEN nova_spelled(sym) IS NULL
              THEN error('''' || sym || ''' is not a symbol; write it as BASE/QUOTE, for example ETH/USDT')
         WHEN nova_spelled(sym) IN (SELECT symbol FROM nova_recorded) THEN true
         ELSE error(nova_spelled(sym) || ' is not recorded here; recorded symbols: '
                    || (SELECT coalesce(string_agg(DISTINCT symbol, ', ' ORDER BY symbol), 'none')
                        FROM nova_recorded)) END""",
    # A time of nanoseconds as the views show times (TIMESTAMPTZ, microseconds, truncated).
    "CREATE MACRO nova_time(ns) AS make_timestamptz(ns // 1000)",
    # Why a state is not valid: nova.core.validity.reason in SQL (the phrase of the break, and when it happened).
    f"""CREATE MACRO nova_reason(kind, at_ts) AS
    {_reason_case("kind")} || ' (' || kind || ' at '
        || strftime(timezone('UTC', at_ts::TIMESTAMPTZ), {_lit(MOMENT)}) || ' UTC)'
    """,
]

MACROS = [
    # Inside the macros every time is an integer of nanoseconds (epoch_ns of the stored column: exact on DuckDB
    # 2.x; DuckDB 1.x reads the files' times in whole microseconds, so there a row received within the microsecond
    # after an instant counts as received by it); they read the tables' stored columns (the _nova_raw_* views), so
    # that a filter on a time prunes row groups by their statistics, and show times as the views do (TIMESTAMPTZ,
    # microseconds).
    #
    # The grid's instants are step-aligned from t0, so only two kinds of quote can be the last one at or before
    # an instant: the last quote of each step-long bucket (and the last one before t0), and a quote received
    # exactly at an instant. Keeping only those (one hash aggregate over the receive times) leaves the ASOF
    # join ~2 quotes per instant to sort instead of the whole day's quotes: the same rows, about twice as fast.
    # Steps with calendar parts (days, months: their length depends on the date and time zone) keep every quote.
    # Validity: the first break ledgered at or after the quote (a second ASOF join) must come after the instant.
    # A run without a stop ends at its last row: unless it has rows at or after t1 (then it outlives the grid),
    # that is its last row within the window read.
    f"""CREATE MACRO top_of_book(mkt, sym, t0, t1, step) AS TABLE
    WITH grid AS (SELECT ts, epoch_ns(ts) AS t
                  FROM (SELECT unnest(generate_series(t0::TIMESTAMPTZ, t1::TIMESTAMPTZ - step::INTERVAL,
                                                      step::INTERVAL)) AS ts)),
         q AS NOT MATERIALIZED (
               SELECT epoch_ns(ts_recv) AS r, update_id, bid_price, bid_amount, ask_price, ask_amount FROM {RAW}bbo
               WHERE market = nova_market(mkt) AND symbol = nova_spelled(sym)
                 AND date BETWEEN timezone('UTC', t0::TIMESTAMPTZ - INTERVAL 1 DAY)::DATE
                                  AND timezone('UTC', t1::TIMESTAMPTZ)::DATE
                 AND ts_recv < t1::TIMESTAMPTZ),
         k AS (SELECT r, r - epoch_ns(t0::TIMESTAMPTZ) AS off,
                      epoch_ns(t0::TIMESTAMPTZ + step::INTERVAL) - epoch_ns(t0::TIMESTAMPTZ) AS step_ns,
                      date_part('year', step::INTERVAL) <> 0 OR date_part('month', step::INTERVAL) <> 0
                          OR date_part('day', step::INTERVAL) <> 0 AS calendar
               FROM q),
         marks AS (SELECT max(r) AS r FROM k
                   GROUP BY CASE WHEN calendar THEN off WHEN off < 0 THEN -1 ELSE off // step_ns END,
                            off >= 0 AND off % step_ns = 0),
         -- quotes received at the same instant count as the one with the later update id
         candidates AS (SELECT r, arg_max(bid_price, update_id) AS bid_price,
                               arg_max(bid_amount, update_id) AS bid_amount, arg_max(ask_price, update_id) AS ask_price,
                               arg_max(ask_amount, update_id) AS ask_amount
                        FROM q WHERE r IN (SELECT r FROM marks) GROUP BY r),
         ledger AS (SELECT epoch_ns(ts_recv) AS ts, kind::VARCHAR AS kind FROM {RAW}events
                    WHERE market = nova_market(mkt) AND symbol = nova_spelled(sym) AND stream = 'bbo'),
         runs AS (SELECT ts AS run_start, coalesce(lead(ts) OVER (ORDER BY ts), {NEVER}) AS run_next
                  FROM ledger WHERE kind = 'start'),
         open_runs AS (SELECT * FROM runs r WHERE NOT EXISTS (
                           SELECT 1 FROM ledger l WHERE l.kind = 'stop' AND l.ts >= r.run_start AND l.ts < r.run_next)),
         ends AS (SELECT r.run_start,
                         EXISTS (SELECT 1 FROM {RAW}bbo x
                                 WHERE x.market = nova_market(mkt) AND x.symbol = nova_spelled(sym)
                                   AND x.date BETWEEN timezone('UTC', t1::TIMESTAMPTZ)::DATE
                                                  AND timezone('UTC', t1::TIMESTAMPTZ)::DATE + 1
                                   AND x.ts_recv >= t1::TIMESTAMPTZ AND epoch_ns(x.ts_recv) >= r.run_start
                                   AND epoch_ns(x.ts_recv) < r.run_next) AS outlives,
                         (SELECT max(r) FROM q WHERE q.r >= run_start AND q.r < run_next) AS last
                  FROM open_runs r),
         brk AS (SELECT ts, kind FROM ledger WHERE kind IN ({_sql_list(QUOTE_BREAKS)})
                 UNION ALL
                 SELECT coalesce(last, run_start) + 1, '{END_OF_DATA}' FROM ends WHERE NOT outlives),
         joined AS (SELECT g.ts, g.t, c.*, b.ts AS break_ns, b.kind AS break_kind
                    FROM grid g ASOF LEFT JOIN candidates c ON g.t >= c.r
                                ASOF LEFT JOIN brk b ON c.r <= b.ts),
         judged AS (SELECT *, r IS NOT NULL AND (break_ns IS NULL OR break_ns > t) AS valid FROM joined)
    SELECT ts, CASE WHEN valid THEN bid_price END AS bid_price, CASE WHEN valid THEN bid_amount END AS bid_amount,
           CASE WHEN valid THEN ask_price END AS ask_price, CASE WHEN valid THEN ask_amount END AS ask_amount,
           nova_time(r) AS quote_ts, (t - r) / 1e6 AS quote_age_ms, valid,
           CASE WHEN valid THEN NULL
                WHEN r IS NULL THEN 'no quote had been recorded (within a day before this instant)'
                ELSE nova_reason(break_kind, nova_time(break_ns)) END AS reason
    FROM judged WHERE nova_guard(sym) ORDER BY ts""",
    # Which messages are in effect at t: those before the first message received after t (``f``). Found with
    # narrow scans that Parquet statistics prune: m = the last message received by t; f is looked for only
    # among messages up to m (normally there is none, and everything up to m counts); the last snapshot by
    # t. Only the levels of the messages from that snapshot on are then read (row groups pruned on msg). A stale
    # snapshot (only hand-made data has one) is skipped like every stale message: it anchors nothing. A price
    # set twice in one message (Binance never does; the contract allows it) takes its later row's amount.
    # Validity: no book break ledgered at or after that snapshot and by t, and t not past the end of a run
    # without a stop (its last book row, unless it has rows after t).
    f"""CREATE MACRO book_at(mkt, sym, t, n) AS TABLE
    WITH keys AS NOT MATERIALIZED (
               SELECT ts_recv, msg, snapshot AND NOT stale AS anchor FROM {RAW}book
               WHERE market = nova_market(mkt) AND symbol = nova_spelled(sym)
                 AND date <= timezone('UTC', t::TIMESTAMPTZ)::DATE),
         upto_t AS (SELECT max(msg) AS m, epoch_ns(max(ts_recv)) AS last_ns FROM keys WHERE ts_recv <= t::TIMESTAMPTZ),
         snap_t AS (SELECT max(msg) AS s FROM keys WHERE anchor AND ts_recv <= t::TIMESTAMPTZ),
         early AS (SELECT f FROM (SELECT min(msg) AS f FROM keys, upto_t
                                  WHERE keys.ts_recv > t::TIMESTAMPTZ AND keys.msg <= upto_t.m)
                   WHERE f IS NOT NULL),
         fixed AS (SELECT max(msg) AS last_msg, max(msg) FILTER (WHERE anchor) AS snap_msg
                   FROM keys JOIN early ON keys.msg < early.f WHERE keys.ts_recv <= t::TIMESTAMPTZ),
         span AS (SELECT CASE WHEN e.any THEN fixed.last_msg ELSE upto_t.m END AS last_msg,
                         CASE WHEN e.any THEN fixed.snap_msg ELSE snap_t.s END AS snap_msg
                  FROM upto_t, snap_t, fixed, (SELECT EXISTS (SELECT 1 FROM early) AS any) e),
         anchor AS (SELECT (SELECT epoch_ns(max(ts_recv)) FROM keys, span WHERE keys.msg = span.snap_msg) AS snap_ns,
                           (SELECT last_ns FROM upto_t) AS last_ns, epoch_ns(t::TIMESTAMPTZ) AS t_ns),
         ledger AS (SELECT epoch_ns(ts_recv) AS ts, kind::VARCHAR AS kind FROM {RAW}events
                    WHERE market = nova_market(mkt) AND symbol = nova_spelled(sym) AND stream = 'book'),
         run AS (SELECT max(l.ts) AS run_start FROM ledger l, anchor
                 WHERE l.kind = 'start' AND l.ts <= anchor.snap_ns),
         run_next AS (SELECT coalesce(min(l.ts), {NEVER}) AS run_next FROM ledger l, anchor
                      WHERE l.kind = 'start' AND l.ts > anchor.snap_ns),
         stopped AS (SELECT EXISTS (SELECT 1 FROM ledger l, run, run_next WHERE l.kind = 'stop'
                                    AND l.ts >= coalesce(run.run_start, -{NEVER}) AND l.ts < run_next.run_next) AS yes),
         outlives AS (SELECT EXISTS (SELECT 1 FROM {RAW}book x, run_next
                                     WHERE x.market = nova_market(mkt) AND x.symbol = nova_spelled(sym)
                                       AND x.date BETWEEN timezone('UTC', t::TIMESTAMPTZ)::DATE
                                                      AND timezone('UTC', t::TIMESTAMPTZ)::DATE + 1
                                       AND x.ts_recv > t::TIMESTAMPTZ
                                       AND epoch_ns(x.ts_recv) < run_next.run_next) AS yes),
         brk AS (SELECT l.ts, l.kind FROM ledger l, anchor
                 WHERE l.kind IN ({_sql_list(BOOK_BREAKS)}) AND l.ts >= anchor.snap_ns AND l.ts <= anchor.t_ns
                 UNION ALL
                 SELECT anchor.last_ns + 1, '{END_OF_DATA}' FROM anchor, stopped, outlives
                 WHERE NOT stopped.yes AND NOT outlives.yes AND anchor.last_ns < anchor.t_ns),
         verdict AS (SELECT anchor.snap_ns, anchor.last_ns, anchor.t_ns,
                            anchor.snap_ns IS NOT NULL AND NOT EXISTS (SELECT 1 FROM brk) AS valid,
                            CASE WHEN anchor.snap_ns IS NULL THEN {_lit(REASONS[NO_SNAPSHOT])}
                                 ELSE (SELECT nova_reason(kind, nova_time(ts)) FROM brk ORDER BY ts LIMIT 1) END
                                AS reason
                     FROM anchor),
         live AS (SELECT r.side, r.price, r.amount, r.msg,
                         row_number() OVER (PARTITION BY r.side, r.price
                                            ORDER BY r.msg DESC, r.file_row_number DESC) AS latest
                  FROM {RAW}book r, span, verdict
                  WHERE verdict.valid AND r.market = nova_market(mkt) AND r.symbol = nova_spelled(sym)
                    AND r.date <= timezone('UTC', t::TIMESTAMPTZ)::DATE
                    AND r.ts_recv <= t::TIMESTAMPTZ AND r.msg >= span.snap_msg AND r.msg <= span.last_msg
                    AND NOT r.stale AND r.side IS NOT NULL),
         levels AS (SELECT side, price, amount,
                           row_number() OVER (PARTITION BY side ORDER BY
                               CASE WHEN side = 'bid' THEN -price ELSE price END) AS level
                    FROM live WHERE latest = 1 AND amount > 0)
    SELECT side, level, price, amount, true AS valid, NULL::VARCHAR AS reason, nova_time(v.snap_ns) AS snapshot_ts,
           (v.t_ns - v.last_ns) / 1e6 AS quote_age_ms
    FROM levels, verdict v WHERE level <= n AND nova_guard(sym)
    UNION ALL
    SELECT NULL, NULL, NULL, NULL, false, v.reason, nova_time(v.snap_ns), NULL FROM verdict v
    WHERE NOT v.valid AND nova_guard(sym)
    ORDER BY side DESC NULLS FIRST, level""",
    """CREATE MACRO basis(sym, t0, t1, step) AS TABLE
    SELECT s.ts, (s.bid_price + s.ask_price) / 2 AS spot_mid, (p.bid_price + p.ask_price) / 2 AS perp_mid,
           ((p.bid_price + p.ask_price) / (s.bid_price + s.ask_price) - 1) * 1e4 AS basis_bps,
           s.quote_age_ms AS spot_quote_age_ms, p.quote_age_ms AS perp_quote_age_ms,
           s.valid AND p.valid AS valid,
           CASE WHEN NOT s.valid THEN 'spot: ' || s.reason WHEN NOT p.valid THEN 'perp: ' || p.reason END AS reason
    FROM top_of_book('spot', sym, t0, t1, step) s JOIN top_of_book('perp', sym, t0, t1, step) p USING (ts)
    ORDER BY s.ts""",
]

_ = BOOK_ANCHOR  # the anchor of a book span is its snapshot message (the macros find it in ``book`` itself)


def install(con: duckdb.DuckDBPyConnection, present: list[str]) -> None:
    """Create the macros over the session's views (``book``, ``bbo`` and ``events`` must exist, empty or not;
    ``present`` names the tables that hold files). A dataset without a ledger has no recorded breaks: its books
    count from their snapshots and its quotes from themselves, until the end of the data."""
    tables: list[str] = (["events"] if "events" in present
                         else [t for t in ("book", "bbo") if t in present] or ["events"])
    con.execute("CREATE TEMP VIEW nova_recorded AS " + " UNION ".join(f"SELECT DISTINCT symbol FROM {t}"
                                                                       for t in tables))
    for macro in (*HELPERS, *MACROS):
        con.execute(macro)
