-- Every gateway's events, each once: (gateway, seq) is the event's identity.
CREATE TABLE events (
    gateway  text        NOT NULL,
    seq      bigint      NOT NULL CHECK (seq >= 0),
    class    text        NOT NULL,
    kind     text        NOT NULL,
    -- When central received it (the gateway's own time is in the body, and may be years off).
    received timestamptz NOT NULL,
    -- The event's JSON exactly as the gateway sent it (checked by central, not again here).
    body     text        NOT NULL,
    PRIMARY KEY (gateway, seq)
);

-- Retention deletes a class's oldest first.
CREATE INDEX events_by_class_and_receipt ON events (class, received);

-- The sequence numbers held of each gateway, pruned ones included, as sorted inclusive ranges
-- (16 bytes each: first and last, big-endian). Locked per gateway by the transaction that
-- stores its batches, so replicas storing the same gateway's batches take turns.
CREATE TABLE event_seen (
    gateway text  PRIMARY KEY,
    ranges  bytea NOT NULL
);
