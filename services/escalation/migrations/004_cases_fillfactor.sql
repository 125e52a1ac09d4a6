-- A case row is updated several times in its life (signed, contacted, resolved, each
-- escalation level). Room left on each page lets PostgreSQL update it in place (a HOT
-- update) instead of writing a new version to another page and to every index.
ALTER TABLE cases SET (fillfactor = 80);
