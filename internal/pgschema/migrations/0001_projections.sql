-- Projection state. The checkpoint is the truth (invariant I5): the last
-- applied log ID per (projection, category, partition), committed in the
-- same transaction as the read-model change.
--   position, event_id  the last applied entry; event_id lets a new owner
--                       check that the entry at the checkpoint is still the
--                       same one (a log that lost its tail reuses IDs).
--   fence               bumped by every new owner; a batch commits only if
--                       the fence is still its own, so a worker that lost
--                       its lease cannot commit.
--   generation          bumped by an in-place rebuild.
CREATE TABLE {{schema}}.checkpoints (
    projection  text        NOT NULL,
    category    text        NOT NULL,
    partition   int         NOT NULL,
    position    text        NOT NULL DEFAULT '0-0',
    event_id    uuid,
    fence       bigint      NOT NULL DEFAULT 0,
    generation  bigint      NOT NULL DEFAULT 0,
    owner       text        NOT NULL DEFAULT '',
    applied     bigint      NOT NULL DEFAULT 0,
    last_error  text        NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, category, partition)
);

-- Events a projection holds back instead of applying:
--   reason 'quarantined'  the handler failed past the limits (poison);
--   reason 'parked'       a later event of a quarantined aggregate, held
--                         so that the aggregate's order is kept (sequenced);
--   reason 'missing'      a pending log entry that was deleted or trimmed.
-- requested is an operator's request ('retry' or 'skip') that the owning
-- worker carries out. mirrored says whether the Redis dead-letter stream
-- holds the entry. Resolved rows stay as history.
CREATE TABLE {{schema}}.held_events (
    projection    text        NOT NULL,
    category      text        NOT NULL,
    partition     int         NOT NULL,
    position      text        NOT NULL,
    ms            numeric(20) NOT NULL,
    seq           numeric(20) NOT NULL,
    aggregate_id  text        NOT NULL,
    version       bigint      NOT NULL,
    event_id      uuid,
    event_type    text        NOT NULL,
    reason        text        NOT NULL,
    error         text        NOT NULL DEFAULT '',
    attempts      int         NOT NULL DEFAULT 0,
    deliveries    int         NOT NULL DEFAULT 0,
    held_at       timestamptz NOT NULL DEFAULT now(),
    requested     text,
    mirrored      boolean     NOT NULL DEFAULT false,
    resolved_at   timestamptz,
    resolution    text,
    PRIMARY KEY (projection, category, partition, position)
);
CREATE INDEX held_events_open ON {{schema}}.held_events (projection, category, partition, aggregate_id, ms, seq)
    WHERE resolved_at IS NULL;

-- The version of each projection that readers see (blue/green rebuilds).
CREATE TABLE {{schema}}.projection_versions (
    name        text        PRIMARY KEY,
    active      int         NOT NULL,
    switched_at timestamptz NOT NULL DEFAULT now()
);

-- The event-store namespace whose projections this schema holds. Checkpoints
-- are keyed by projection name only, so one schema serves one namespace; a
-- runner of another namespace is refused instead of sharing checkpoints.
CREATE TABLE {{schema}}.projection_namespace (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    namespace  text    NOT NULL
);
