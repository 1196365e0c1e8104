-- Central's state besides the events (alerts, cases, meetings, bundles, master data, the
-- operators' audit): named tables of ordered keys to values, as `central::state::Table` has
-- them. bytea orders bytewise, as sled does.
CREATE TABLE state (
    tbl   text  NOT NULL,
    key   bytea NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (tbl, key)
);
