-- The gauges read from the tables (open cases by state, the departments' rates over the
-- trailing window) are computed by one replica per interval and kept here; every replica
-- exports the kept values. Before, each replica recomputed them every 15 s on its own,
-- counting every case ever handled and aggregating the whole trailing month each time.
CREATE TABLE gauge_snapshots (
    name        text        PRIMARY KEY,
    computed_at timestamptz NOT NULL,
    value       jsonb       NOT NULL
);
