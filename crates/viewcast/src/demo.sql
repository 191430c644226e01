CREATE SOURCE wikirecent FROM LOAD GENERATOR WIKIPEDIA (EVENTS PER SECOND 200, SEED 7);
-- one column: data jsonb, one recentchange event per row
CREATE MATERIALIZED VIEW recentchanges AS
  SELECT val->>'user' AS user, (val->'bot')::bool AS bot, val->>'wiki' AS wiki,
         val->>'type' AS type, val->>'title' AS title, (val->'timestamp')::float AS r_ts,
         (val->'length'->'new')::float::int - (val->'length'->'old')::float::int AS delta
  FROM (SELECT data::jsonb AS val FROM wikirecent);
CREATE MATERIALIZED VIEW counter AS SELECT COUNT(*) FROM recentchanges;
CREATE MATERIALIZED VIEW useredits AS SELECT user, count(*) FROM recentchanges GROUP BY user;
CREATE MATERIALIZED VIEW top10 AS SELECT * FROM useredits ORDER BY count DESC LIMIT 10;
CREATE MATERIALIZED VIEW editsperwiki AS SELECT wiki, count(*) FROM recentchanges GROUP BY wiki;
-- A sliding window: edits per second over the last minute. r_ts is the event's Unix time in
-- seconds; a second's row leaves when mz_now() (ms) passes it by a minute, with no new input.
CREATE MATERIALIZED VIEW editslastminute AS
  SELECT r_ts::bigint AS second, count(*) AS edits FROM recentchanges
  WHERE mz_now() <= r_ts * 1000 + 60000 GROUP BY r_ts;
