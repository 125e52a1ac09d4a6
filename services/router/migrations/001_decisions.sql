-- Every routing decision with its reason trace, kept for audit.
CREATE TABLE cases (
    case_id    text        PRIMARY KEY,
    request    jsonb       NOT NULL,
    received_at timestamptz NOT NULL
);

CREATE TABLE decisions (
    case_id     text        NOT NULL REFERENCES cases (case_id),
    attempt     int         NOT NULL,
    outcome     text        NOT NULL CHECK (outcome IN ('dispatched', 'triage')),
    category    text,
    lead        text,
    cooperating text[]      NOT NULL DEFAULT '{}',
    confidence  real        NOT NULL,
    trace       jsonb       NOT NULL,
    decided_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (case_id, attempt)
);
