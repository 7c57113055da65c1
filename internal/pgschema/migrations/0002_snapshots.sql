-- Snapshots (roadmap 2): the latest snapshot of each aggregate, one row per
-- (Redis namespace, category, aggregate ID). The namespace is part of the key
-- because one PostgreSQL schema may serve several event stores (staging and
-- production namespaces in one Redis, for instance).
--
-- version is the aggregate version the payload reflects; position is the log
-- ID ("ms-seq") of the event at that version, which a reader checks against
-- the stream before trusting the row; schema_version is the payload format
-- chosen by the writer. Rows are replaced by upsert: last writer wins.
CREATE TABLE {{schema}}.snapshots (
    namespace       text        NOT NULL,
    category        text        NOT NULL,
    aggregate_id    text        NOT NULL,
    version         bigint      NOT NULL CHECK (version > 0),
    position        text        NOT NULL,
    schema_version  int         NOT NULL CHECK (schema_version > 0),
    payload         bytea       NOT NULL,
    taken_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, category, aggregate_id)
);
