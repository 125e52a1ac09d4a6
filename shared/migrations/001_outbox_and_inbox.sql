-- Every service schema gets these two tables.

-- Transactional outbox: events written in the same transaction as the state
-- change they announce; the relay publishes them to Kafka and then deletes them.
CREATE TABLE outbox (
    id         bigserial   PRIMARY KEY,
    topic      text        NOT NULL,
    key        bytea,
    value      bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Inbox: ids of consumed CloudEvents whose effects are committed, so a
-- redelivered event changes nothing and emits nothing.
CREATE TABLE processed_events (
    event_id     text        PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX processed_events_processed_at ON processed_events (processed_at);
