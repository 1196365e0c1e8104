-- The live replicas, each renewing its row as it renews its leases: how many share the
-- gateways, so that each takes its part and no more.
CREATE TABLE replicas (
    name       text        PRIMARY KEY,
    expires_at timestamptz NOT NULL
);

-- Ids that several replicas take without meeting twice: alerts and maintenance windows.
CREATE SEQUENCE alert_ids;
