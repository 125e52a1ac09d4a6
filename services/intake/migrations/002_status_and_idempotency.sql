-- What Open311 and GET /v1/requests need: when it was requested, its category,
-- the projection of each case's public lifecycle (from case.events.v1), and the
-- Idempotency-Key header's memory.
ALTER TABLE requests ADD COLUMN requested_at timestamptz;
UPDATE requests
   SET requested_at = coalesce((request ->> 'submitted_at')::timestamptz, received_at);
ALTER TABLE requests ALTER COLUMN requested_at SET NOT NULL;
CREATE INDEX requests_requested_at ON requests (requested_at DESC, case_id);

-- One row per case: its current public state. state is the lifecycle state
-- (received, triage, dispatched, signed, in_progress, extended, returned,
-- resolved, reopened, closed); Open311's open/closed is derived from it.
CREATE TABLE case_status (
    case_id      text        PRIMARY KEY,
    state        text        NOT NULL,
    category     text,                  -- taxonomy id: the hint, then the router's choice
    department   text,                  -- lead department id
    resolve_due  timestamptz,           -- Open311 expected_datetime
    status_notes text,
    updated_at   timestamptz NOT NULL
);
INSERT INTO case_status (case_id, state, category, updated_at)
SELECT case_id, 'received', NULL, received_at FROM requests
ON CONFLICT DO NOTHING;
CREATE INDEX case_status_state ON case_status (state);
CREATE INDEX case_status_category ON case_status (category);

-- The public history: one row per lifecycle event, in the order they happened.
CREATE TABLE case_history (
    event_id   text        PRIMARY KEY,
    case_id    text        NOT NULL,
    at         timestamptz NOT NULL,
    kind       text        NOT NULL,
    state      text,
    department text,
    note       text
);
CREATE INDEX case_history_case ON case_history (case_id, at);

-- Idempotency-Key header: a client's key names one request; same key, same body.
CREATE TABLE idempotency_keys (
    client       text        NOT NULL,
    key          text        NOT NULL,
    payload_hash text        NOT NULL,
    case_id      text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client, key)
);

-- A request with its public state, as the APIs read it.
CREATE VIEW case_views AS
SELECT r.case_id, r.request, r.requested_at, r.received_at,
       coalesce(s.state, 'received') AS state, s.category, s.department, s.resolve_due,
       s.status_notes, coalesce(s.updated_at, r.received_at) AS updated_at
  FROM requests r LEFT JOIN case_status s USING (case_id);
