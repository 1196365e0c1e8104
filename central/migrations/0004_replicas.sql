-- The live replicas, each renewing its row as it renews its leases: how many share the
-- gateways, so that each takes its part and no more, and where each serves its video relays
-- (another replica follows the relay of a gateway's holder).
CREATE TABLE replicas (
    name       text        PRIMARY KEY,
    expires_at timestamptz NOT NULL,
    relay_url  text        NOT NULL DEFAULT ''
);

-- Ids that several replicas take without meeting twice: alerts and maintenance windows.
CREATE SEQUENCE alert_ids;

-- A lease lives while its holder's row above does (one row renewed per replica, not one per
-- gateway); a lease given back has no owner ('').
ALTER TABLE leases DROP COLUMN expires_at;

-- The leases whose holder is alive.
CREATE VIEW live_leases AS
    SELECT l.gateway, l.owner, l.generation
    FROM leases l JOIN replicas r ON r.name = l.owner
    WHERE r.expires_at > now();
