//! The PostgreSQL store's schema, as numbered migrations applied on open.
//!
//! `hoard_migrations` records each applied migration. Opening a store applies
//! the missing ones in order, each in one transaction with its record, so a
//! crash leaves the schema at one migration or the next, never between. A
//! database whose newest migration this build does not know was written by
//! a newer hoard and is refused by name. Two servers opening one new
//! database at once race on the record's primary key; the loser's
//! transaction fails and it retries, finding the work done.
//!
//! The SQL keeps to what CockroachDB and YugabyteDB also accept (no
//! extensions, no advisory locks, no `SERIAL`).

/// One step of the schema.
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) name: &'static str,
    pub(crate) statements: &'static [&'static str],
}

/// Every migration, in order. Never edit one that has shipped: add another.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "the world store: zones, shards, objects, tombstones, meta",
        statements: &[
            "CREATE TABLE hoard_meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL)",
            "CREATE TABLE hoard_zones (zone TEXT PRIMARY KEY)",
            "CREATE TABLE hoard_zone_shards (
                zone TEXT NOT NULL,
                scope_key TEXT NOT NULL,
                shard BIGINT NOT NULL,
                PRIMARY KEY (zone, scope_key, shard)
            )",
            "CREATE TABLE hoard_shards (
                shard BIGINT PRIMARY KEY,
                zone TEXT NOT NULL,
                epoch BIGINT NOT NULL,
                seq BIGINT NOT NULL,
                digest BYTEA NOT NULL,
                horizon BIGINT NOT NULL,
                scope_key TEXT NOT NULL
            )",
            "CREATE TABLE hoard_objects (
                shard BIGINT NOT NULL,
                object BIGINT NOT NULL,
                version BIGINT NOT NULL,
                state_hash BYTEA NOT NULL,
                state BYTEA NOT NULL,
                PRIMARY KEY (shard, object)
            )",
            "CREATE INDEX hoard_objects_by_version ON hoard_objects (shard, version, object)",
            "CREATE TABLE hoard_tombstones (
                shard BIGINT NOT NULL,
                object BIGINT NOT NULL,
                seq BIGINT NOT NULL,
                at_ms BIGINT NOT NULL,
                PRIMARY KEY (shard, object)
            )",
            "CREATE INDEX hoard_tombstones_by_seq ON hoard_tombstones (shard, seq, object)",
        ],
    },
    Migration {
        version: 2,
        name: "zone leases: one owning server per zone, fenced by a token",
        statements: &["CREATE TABLE hoard_zone_leases (
                zone TEXT PRIMARY KEY,
                owner TEXT NOT NULL,
                address TEXT NOT NULL,
                token BIGINT NOT NULL,
                expires_at TIMESTAMPTZ NOT NULL
            )"],
    },
];

/// The newest migration this build knows.
pub(crate) fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}
