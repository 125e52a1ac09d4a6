-- Returns, triage and a fuller audit trail.
-- A case keeps its dispatch attempt and the departments that returned it.
ALTER TABLE cases
    ADD COLUMN attempt  int    NOT NULL DEFAULT 1,
    ADD COLUMN excluded text[] NOT NULL DEFAULT '{}';

-- Several decisions per attempt now (triage, then a manual dispatch): own key.
ALTER TABLE decisions DROP CONSTRAINT decisions_pkey;
ALTER TABLE decisions
    ADD COLUMN id            bigserial PRIMARY KEY,
    ADD COLUMN method        text,
    ADD COLUMN route_id      text,
    ADD COLUMN urgency       text,
    ADD COLUMN sla_policy    text,
    ADD COLUMN jurisdiction  jsonb,
    ADD COLUMN excluded      text[] NOT NULL DEFAULT '{}',
    ADD COLUMN model_version text,
    ADD COLUMN decided_by    text,
    ADD COLUMN reason        text;
CREATE INDEX decisions_case ON decisions (case_id, id);

-- Cases waiting for a person. resolved_at is set when an operator routes it.
CREATE TABLE triage (
    case_id      text        PRIMARY KEY REFERENCES cases (case_id),
    attempt      int         NOT NULL,
    kind         text        NOT NULL,
    reason       text        NOT NULL,
    category     text,
    confidence   real        NOT NULL,
    candidates   jsonb       NOT NULL DEFAULT '[]',
    jurisdiction jsonb       NOT NULL,
    queued_at    timestamptz NOT NULL DEFAULT now(),
    resolved_at  timestamptz,
    resolved_by  text
);
CREATE INDEX triage_open ON triage (queued_at) WHERE resolved_at IS NULL;

-- Operators' decisions, kept as labelled examples for the next training run.
CREATE TABLE labelled_examples (
    id            bigserial   PRIMARY KEY,
    case_id       text        NOT NULL REFERENCES cases (case_id),
    text          text        NOT NULL,
    category      text        NOT NULL,
    expected_lead text        NOT NULL,
    channel       text        NOT NULL,
    address       text,
    lat           double precision,
    long          double precision,
    grid_id       text,
    operator      text        NOT NULL,
    reason        text        NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now()
);
