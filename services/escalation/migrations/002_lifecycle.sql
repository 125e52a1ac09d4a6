-- The full lifecycle: every clock, the pending extension, returns, ratings, reopenings.
ALTER TABLE cases
    ALTER COLUMN lead DROP NOT NULL,
    ALTER COLUMN dispatched_at DROP NOT NULL,
    ALTER COLUMN sign_for_due DROP NOT NULL,
    ADD COLUMN attempt          int         NOT NULL DEFAULT 1,
    ADD COLUMN excluded         text[]      NOT NULL DEFAULT '{}',
    ADD COLUMN return_count     int         NOT NULL DEFAULT 0,
    ADD COLUMN contact_due      timestamptz,
    ADD COLUMN resolve_due      timestamptz,
    ADD COLUMN contacted_at     timestamptz,
    ADD COLUMN contacted_by     text,
    ADD COLUMN resolved_at      timestamptz,
    ADD COLUMN overdue          boolean     NOT NULL DEFAULT false,
    ADD COLUMN reply            text,
    ADD COLUMN ext_new_due      timestamptz,
    ADD COLUMN ext_reason       text,
    ADD COLUMN ext_requested_at timestamptz,
    ADD COLUMN ext_actor        text,
    ADD COLUMN rating           text,
    ADD COLUMN reopen_count     int         NOT NULL DEFAULT 0,
    ADD COLUMN level            int         NOT NULL DEFAULT 0,
    ADD COLUMN closed_at        timestamptz,
    ADD COLUMN created_at       timestamptz NOT NULL DEFAULT now();
CREATE INDEX cases_state ON cases (state);

-- One row per dispatch of a case to a lead department (attempt n): the facts the
-- department report counts. A returned assignment keeps its row when the case moves on.
CREATE TABLE assignments (
    case_id       text        NOT NULL REFERENCES cases (case_id),
    attempt       int         NOT NULL,
    department    text        NOT NULL,
    category      text        NOT NULL,
    urgency       text        NOT NULL,
    state         text        NOT NULL,
    dispatched_at timestamptz NOT NULL,
    sign_for_due  timestamptz NOT NULL,
    contact_due   timestamptz NOT NULL,
    resolve_due   timestamptz NOT NULL,
    signed_at     timestamptz,
    contacted_at  timestamptz,
    resolved_at   timestamptz,
    overdue       boolean     NOT NULL DEFAULT false,
    rating        text,
    returned      boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (case_id, attempt)
);
CREATE INDEX assignments_department_dispatched ON assignments (department, dispatched_at);

-- The public history of each case. Append-only: rows are never changed or removed.
CREATE TABLE timeline (
    id         bigserial   PRIMARY KEY,
    case_id    text        NOT NULL REFERENCES cases (case_id),
    at         timestamptz NOT NULL,
    type       text        NOT NULL,
    department text,
    actor      text,
    detail     jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX timeline_case ON timeline (case_id, id);

CREATE FUNCTION timeline_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'timeline is append-only (% refused)', TG_OP;
END $$;
CREATE TRIGGER timeline_append_only BEFORE UPDATE OR DELETE ON timeline
    FOR EACH ROW EXECUTE FUNCTION timeline_append_only();

-- A timer belongs to one setting of a clock (its deadline): a moved or restarted clock
-- gets new timers, and the old ones are removed in the same transaction.
ALTER TABLE timers DROP CONSTRAINT timers_case_id_clock_level_repeat_key;
ALTER TABLE timers ADD CONSTRAINT timers_once UNIQUE (case_id, clock, deadline, level, repeat);

ALTER TABLE escalations ADD COLUMN deadline timestamptz, ADD COLUMN department text;
UPDATE escalations e SET deadline = due_at, department = c.lead
    FROM cases c WHERE c.case_id = e.case_id AND e.deadline IS NULL;
ALTER TABLE escalations ALTER COLUMN deadline SET NOT NULL;
ALTER TABLE escalations DROP CONSTRAINT escalations_pkey;
ALTER TABLE escalations ADD PRIMARY KEY (case_id, clock, deadline, level, repeat);

-- A clock that passed unmet, once per setting of the clock.
CREATE TABLE breaches (
    case_id     text        NOT NULL REFERENCES cases (case_id),
    clock       text        NOT NULL,
    deadline    timestamptz NOT NULL,
    department  text        NOT NULL,
    breached_at timestamptz NOT NULL,
    PRIMARY KEY (case_id, clock, deadline)
);

-- A callback's answer is kept with its webhook-id: the same callback again gets the
-- same answer; the id reused for anything else is refused.
ALTER TABLE callbacks
    ADD COLUMN request_sha256 text,
    ADD COLUMN status int,
    ADD COLUMN answer jsonb;
