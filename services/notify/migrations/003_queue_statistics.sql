-- The deliveries table is a queue: it can grow by thousands of rows a minute from
-- nearly empty. Analyse it (and vacuum the rows that leases and settlements rewrite)
-- after a few hundred changes rather than a fifth of the table, so the planner's
-- picture of the pending rows stays close to the truth.
ALTER TABLE deliveries SET (
    autovacuum_analyze_threshold = 500,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_scale_factor = 0.05
);
