-- Who holds each case: the departments its events go to.
CREATE TABLE case_holders (
    case_id     text        PRIMARY KEY,
    lead        text        NOT NULL,
    cooperating text[]      NOT NULL DEFAULT '{}',
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per (event, department): the durable queue and the ledger.
-- next_attempt_at doubles as a lease: a worker pushes it forward before sending,
-- so a crashed worker's deliveries come due again by themselves.
CREATE TABLE deliveries (
    id               bigserial   PRIMARY KEY,
    webhook_id       text        NOT NULL UNIQUE,
    case_id          text        NOT NULL,
    department       text        NOT NULL,
    event_id         text        NOT NULL,
    event_type       text        NOT NULL,
    body             bytea       NOT NULL,
    status           text        NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts         int         NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_status_code int,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_case ON deliveries (case_id, department, id) WHERE status = 'pending';

CREATE TABLE delivery_attempts (
    delivery_id bigint      NOT NULL REFERENCES deliveries (id),
    attempt     int         NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    status_code int,
    latency_ms  real        NOT NULL,
    error       text,
    PRIMARY KEY (delivery_id, attempt)
);
