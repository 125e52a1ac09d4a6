-- A firing is recorded once: its escalations row (the fire-once guard) is also its entry
-- in the case's history, which reads the timeline and the escalations together. A burst of
-- thousands of timers writes one history row per firing, not two. The targets the firing
-- named move to that row; the earlier copies in the timeline move out of it.
ALTER TABLE escalations ADD COLUMN targets text[] NOT NULL DEFAULT '{}';

CREATE TEMPORARY TABLE escalation_entries ON COMMIT DROP AS
SELECT t.id AS timeline_id, e.case_id, e.clock, e.deadline, e.level, e.repeat,
       ARRAY(SELECT jsonb_array_elements_text(t.detail -> 'targets')) AS targets
FROM timeline t
JOIN escalations e
  ON t.case_id = e.case_id
 AND t.detail ->> 'clock' = e.clock
 AND (t.detail ->> 'level')::int = e.level
 AND (t.detail ->> 'repeat')::int = e.repeat
 AND (t.detail ->> 'due_at')::timestamptz = e.deadline
WHERE t.type = 'civicroute.case.escalated.v1';

UPDATE escalations e
SET targets = m.targets
FROM escalation_entries m
WHERE (e.case_id, e.clock, e.deadline, e.level, e.repeat)
    = (m.case_id, m.clock, m.deadline, m.level, m.repeat);

ALTER TABLE timeline DISABLE TRIGGER timeline_append_only;
DELETE FROM timeline WHERE id IN (SELECT timeline_id FROM escalation_entries);
ALTER TABLE timeline ENABLE TRIGGER timeline_append_only;

-- History is append-only, in this table as in the timeline.
CREATE OR REPLACE FUNCTION timeline_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only (% refused)', TG_TABLE_NAME, TG_OP;
END $$;
CREATE TRIGGER escalations_append_only BEFORE UPDATE OR DELETE ON escalations
    FOR EACH ROW EXECUTE FUNCTION timeline_append_only();
