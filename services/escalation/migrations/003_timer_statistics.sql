-- Timers are inserted and deleted all day: keep their statistics and dead rows in
-- step with the churn (the claim query reads the due end of the due_at index).
ALTER TABLE timers SET (
    autovacuum_analyze_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 2000,
    autovacuum_vacuum_scale_factor = 0.05
);
