-- Deliveries carry webhooks to departments and notices to the citizen gateway alike.
-- tries/window_start: the retry window, restarted by a replay (attempts keeps counting,
-- so the ledger's attempt numbers stay unique). dead_reason: rejected (a permanent 4xx)
-- or horizon (retried until the horizon passed).
ALTER TABLE deliveries
    ADD COLUMN kind         text        NOT NULL DEFAULT 'webhook'
                            CHECK (kind IN ('webhook', 'notice')),
    ADD COLUMN tries        int         NOT NULL DEFAULT 0,
    ADD COLUMN window_start timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN dead_reason  text,
    ADD COLUMN replays      int         NOT NULL DEFAULT 0,
    ADD COLUMN updated_at   timestamptz NOT NULL DEFAULT now();
UPDATE deliveries SET window_start = created_at, tries = attempts;

CREATE INDEX deliveries_ledger ON deliveries (case_id, id);
CREATE INDEX deliveries_by_department ON deliveries (department, id);
-- The delivery loop reads each endpoint's due deliveries in order from this index.
CREATE INDEX deliveries_pending_by_endpoint ON deliveries (department, next_attempt_at, id)
    WHERE status = 'pending';

ALTER TABLE delivery_attempts ADD COLUMN retry_after_seconds real;

-- The case's urgency as of its latest dispatch (quiet hours spare emergencies).
ALTER TABLE case_holders ADD COLUMN urgency text;

-- How to reach the citizen about a case. Personal data: read to build a notice, never logged.
CREATE TABLE case_contacts (
    case_id    text        PRIMARY KEY,
    phone      text,
    email      text,
    language   text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
