-- Work that must have one writer per gateway (its alerts' state machines and escalation, its
-- rollouts) is done by the replica holding the gateway's lease. `generation` grows each time
-- the lease changes hands: a fencing token for what the holder writes.
CREATE TABLE leases (
    gateway    text        PRIMARY KEY,
    owner      text        NOT NULL,
    generation bigint      NOT NULL,
    expires_at timestamptz NOT NULL
);
