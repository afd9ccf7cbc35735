// Package outbox is the catalog's transactional outbox: an event is written
// to the outbox table in the same transaction as the change it announces
// (Insert), and a Forwarder publishes the committed rows to JetStream and
// deletes them.
//
// # Why our own forwarder
//
// The issue offered three well-kept parts: watermill-sql's forwarder, river,
// or our own on pgx. We wrote our own (a few hundred lines on pgx) because:
//
//   - Order per integration with several catalog replicas sharing the work.
//     watermill-sql v4 keeps order only by serialising: its default
//     PostgreSQL offsets adapter locks the consumer group's offsets row FOR
//     UPDATE, so one replica at a time reads the whole topic table and the
//     others wait; its PostgreSQLQueueSchema ("does not support consumer
//     groups") can filter with a WHERE clause and locks rows FOR UPDATE, but
//     marks them acked with an UPDATE and needs its own table shape
//     (watermill_<topic>: offset, uuid, payload, metadata, acked) and
//     Watermill's message envelope. Neither gives "several replicas, each
//     owning some partitions, skipping the ones another replica holds",
//     which is what partition advisory locks give here. river is a job
//     queue: per-job retries and scheduling, no ordering between jobs.
//   - The schema is ours already: outbox rows live under row-level security
//     (written by inthub_app with the tenant set), and the forwarder runs as
//     inthub_forwarder, which may SELECT and DELETE outbox rows and touch
//     nothing else. Both libraries want tables and rights of their own.
//   - It publishes through pkg/bus's Publisher (any value with PublishMsg),
//     the payload bytes untouched and Nats-Msg-Id = the event id, so a crash
//     between the JetStream ack and the DELETE only re-publishes rows that
//     the stream's duplicate window (≥ 2 min) drops. Past the window the
//     re-publish reaches consumers with the same CloudEvents id, which they
//     deduplicate on (DESIGN §4): at least once, never lost.
//
// # How rows flow
//
// Each row carries partition = Partition(aggregate id). A forwarder pass,
// woken by Poke, by LISTEN inthub_outbox or by a slow poll (see Waking
// forwarders), takes each partition that has rows in its own
// transaction: pg_try_advisory_xact_lock(LockClass, partition) — if another
// replica holds it, skip, as FOR UPDATE SKIP LOCKED would for rows — then
// the oldest Batch rows by id, publish them in id order waiting for each JetStream ack, stop at the first
// failure, delete what was published, commit. Partitions are forwarded
// concurrently, each one in order.
//
// Why id order is commit order for one integration: every transaction that
// writes an integration's event first locks the integration's row (the
// UPDATE of the change, or SELECT ... FOR UPDATE); a create's row is
// invisible to everyone until it commits. So the transaction that writes the
// next event of an integration can only take its outbox id (an identity,
// assigned at INSERT) after the previous one committed: ids of one
// aggregate increase in commit order. Rows of different aggregates may
// commit out of id order, which does not matter: rows are deleted, not
// passed by an offset, so a late commit with a lower id is simply found on
// the next pass, and the advisory lock makes one forwarder at a time the
// owner of a partition.
//
// # Waking forwarders
//
// Nothing on the commit path of a write notifies. The first version had a
// trigger run pg_notify in every transaction that wrote an outbox row; a
// notifying transaction holds PostgreSQL's cluster-wide notify-queue lock
// from pre-commit until its commit record is flushed, so the catalog's
// writes queued on that lock one WAL flush at a time and stopped sharing
// flushes (group commit): the outbox carried a fifth to a third of the
// writes the same transactions managed without it (BenchmarkOutbox,
// docs/benchmarks.md). Migration 0002 dropped the trigger.
//
// Instead, after a commit that wrote outbox rows the store calls back
// (store.WithAfterCommit) and the catalog does two things there:
//
//   - (*Forwarder).Poke wakes its own replica's forwarder in process: no
//     round trip, so the replica that took the write usually publishes it;
//   - (*Notifier).Notify asks for one NOTIFY on channel inthub_outbox, in its
//     own statement, debounced to at most one per window (5 ms), which
//     wakes the other replicas' forwarders through their LISTEN connection.
//     Those matter when this replica cannot forward a partition because
//     another one holds it, or when this replica stops before forwarding.
//
// Every forwarder still polls (Config.PollEvery) for wake-ups lost to a
// crash between commit and callback, a failed notify, or a LISTEN
// connection that was down.
//
// # Spool or not
//
// Give the Forwarder a bus.Publisher without a spool. When NATS is down the
// publish fails, the rows stay in the outbox (durable, shared by every
// replica, in order), and the forwarder retries with backoff. With a spool
// the publish "succeeds" into one replica's local disk and the rows are
// deleted; another replica may then take the partition and publish a later
// event of the same integration directly while the earlier one still waits
// in the first replica's spool, breaking order. The outbox is the spool.
//
// # The integrations bucket
//
// With Config.State set, the forwarder also keeps the JetStream KV bucket
// bus.BucketIntegrations: right after a lifecycle row is published (and
// before the row is deleted) it writes key <tenantId>.<integrationId> =
// data.integration for integration.created and integration.updated, and a
// delete marker for integration.deleted; integration.health_changed sets
// healthStatus in the stored record. A created/updated record also holds
// the event's traceparent (removed again by a health write), so the health
// poller's check that follows a change is in the change's trace. The
// health-poller and the annotation worker watch the bucket
// (pkg/integrationset): one watch is their snapshot at start and their
// feed of changes after it. Replaying the
// INTEGRATIONS stream instead would miss every integration unchanged for
// longer than the stream's MaxAge (7 days).
//
// Rows can reach the bucket more than once (a pass whose DELETE failed is
// repeated), and a forwarder whose transaction timed out may still have a
// write in flight when another replica takes the partition. So
// every write is a compare-and-set on the key's revision, an event never
// replaces a record of an equal or later version, and a delete marker is
// final: a later created/updated of that id is ignored (ids are never
// reused), which is also why the marker is kept (history 1 keeps exactly
// one entry per key, the marker). A bucket write that fails is handled as
// a failed publish: the row stays, the pass is retried with backoff, and
// the repeated publish is dropped by the duplicate window. A write refused
// for good (a payload that does not decode, a value over the server's size
// limit) is logged and counted (Stats.StateSkipped) and does not block the
// partition.
//
// Known gap: the bucket holds what the forwarder wrote since the bucket
// existed. A catalog database older than the bucket, or a NATS store lost
// while the database survived, leaves integrations out of it until each
// one changes; rebuilding it needs a read of every tenant's integrations,
// which the forwarder's role may not do.
//
// A row whose publish JetStream refuses for good (a permanent error, such as
// a message over the stream's size limit) would block its partition for
// ever; it is written to the dead-letter subject (dlq.<subject>) with the
// error in headers and then deleted, so every other integration sharing the
// partition keeps moving.
package outbox
