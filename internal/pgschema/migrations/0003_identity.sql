-- Namespace identity (roadmap 6): Redis can forget a namespace (a restart
-- without persistence, a flush, a failover to a replica that never had it).
-- The namespace has an identity in Redis, created once; what remembers the
-- log durably records it here and compares before trusting Redis.
--   projection_namespace.identity  the identity of the namespace whose
--                                  projections this schema holds (NULL until
--                                  a runner or a witness records it)
--   checkpoints.stopped            why a partition stopped applying events
--                                  because Redis lost what the checkpoint
--                                  remembers: '' (running), 'log_regressed'
--                                  or 'namespace_lost'
--   snapshots.identity             the namespace identity a snapshot was
--                                  taken in (NULL for rows from before)
ALTER TABLE {{schema}}.projection_namespace ADD COLUMN identity text;
ALTER TABLE {{schema}}.checkpoints ADD COLUMN stopped text NOT NULL DEFAULT '';
ALTER TABLE {{schema}}.snapshots ADD COLUMN identity text;
