-- Accepted citizen requests, one row per case. (channel, source_ref) is the
-- platform's identity for a request: the same pair again is the same request.
CREATE SEQUENCE case_number;

CREATE TABLE requests (
    case_id      text        PRIMARY KEY,
    channel      text        NOT NULL,
    source_ref   text        NOT NULL,
    payload_hash text        NOT NULL,
    request      jsonb       NOT NULL,
    received_at  timestamptz NOT NULL,
    UNIQUE (channel, source_ref)
);
