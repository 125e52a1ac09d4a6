-- Cases after dispatch, with their state and who holds them.
CREATE TABLE cases (
    case_id        text        PRIMARY KEY,
    state          text        NOT NULL,
    lead           text        NOT NULL,
    cooperating    text[]      NOT NULL DEFAULT '{}',
    category       text        NOT NULL,
    urgency        text        NOT NULL,
    sla_policy     text        NOT NULL,
    dispatched_at  timestamptz NOT NULL,
    sign_for_due   timestamptz NOT NULL,
    signed_at      timestamptz,
    signed_by      text,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Durable deadline timers. Replicas claim due rows with FOR UPDATE SKIP LOCKED;
-- a row is deleted in the same transaction that acts on it, so it fires once.
CREATE TABLE timers (
    id       bigserial   PRIMARY KEY,
    case_id  text        NOT NULL REFERENCES cases (case_id),
    clock    text        NOT NULL,
    level    int         NOT NULL,
    repeat   int         NOT NULL DEFAULT 0,
    deadline timestamptz NOT NULL,
    due_at   timestamptz NOT NULL,
    UNIQUE (case_id, clock, level, repeat)
);
CREATE INDEX timers_due_at ON timers (due_at);

-- Each escalation that fired: the audit trail, and the guard against firing twice.
CREATE TABLE escalations (
    case_id  text        NOT NULL REFERENCES cases (case_id),
    clock    text        NOT NULL,
    level    int         NOT NULL,
    repeat   int         NOT NULL,
    due_at   timestamptz NOT NULL,
    fired_at timestamptz NOT NULL,
    PRIMARY KEY (case_id, clock, level, repeat)
);

-- Department callbacks seen, by webhook-id: a replayed one is refused.
CREATE TABLE callbacks (
    webhook_id  text        PRIMARY KEY,
    department  text        NOT NULL,
    case_id     text        NOT NULL,
    action      text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
