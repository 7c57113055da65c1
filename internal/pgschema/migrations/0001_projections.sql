-- Projection state: one checkpoint per (projection, category, partition).
-- The checkpoint is the last applied log ID; it commits in the same
-- transaction as the read-model change (invariant I5). generation counts
-- in-place rebuilds; owner is the worker that last committed.
CREATE TABLE {{schema}}.checkpoints (
    projection  text    NOT NULL,
    category    text    NOT NULL,
    partition   int     NOT NULL,
    position    text    NOT NULL DEFAULT '0-0',
    ms          numeric(20) NOT NULL DEFAULT 0,
    seq         numeric(20) NOT NULL DEFAULT 0,
    generation  bigint  NOT NULL DEFAULT 0,
    owner       text    NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, category, partition)
);
