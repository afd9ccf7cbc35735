-- The outbox no longer notifies from a trigger.
--
-- outbox_notify (0001) ran pg_notify in every transaction that wrote an
-- outbox row. A notifying transaction takes PostgreSQL's one notify-queue
-- lock (per cluster) in PreCommit_Notify and holds it until its commit
-- record is flushed, so every catalog write serialised on that lock through
-- its own WAL flush and commits stopped grouping: pgbench with 8 clients on
-- the development machine did 12.7-14.9k tps without the notify and
-- 2.8-5.5k with it, and the outbox carried 0.21-0.33 of the writes it
-- should.
--
-- The wake-up now happens after commit, off the write path: the replica that
-- committed pokes its own forwarder in process, and a debounced
-- outbox.Notifier sends at most one pg_notify('inthub_outbox', '') per few
-- milliseconds in its own statement, which wakes the other replicas'
-- forwarders (they still LISTEN, and still poll as a fallback).
DROP TRIGGER outbox_notify ON outbox;
DROP FUNCTION outbox_notify();
