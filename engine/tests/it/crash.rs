//! kill -9 at random moments during a stream of commits: on reopen every
//! acknowledged commit is present, nothing half-applied is visible, a moved
//! object exists exactly once, and every stored digest equals the digest
//! recomputed from the stored objects.
//!
//! Run against both durable stores: redb (a file) and PostgreSQL (a schema
//! of the test's own). The writer is a real second process (`hoard-engine-crash-writer`) killed
//! with SIGKILL. `HOARD_CRASH_KILLS` raises the kill count for a longer run by
//! hand; `HOARD_CRASH_SEED` replays one run.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use hoard_engine::store::{WorldStore, verify};
use hoard_engine::{ObjectId, RedbStore, ShardId};

use super::support::PgSchema;

/// The store the writer commits to.
enum Target {
    Redb(std::path::PathBuf),
    Postgres(PgSchema),
}

impl Target {
    fn args(&self) -> Vec<String> {
        match self {
            Target::Redb(path) => vec![path.display().to_string()],
            Target::Postgres(schema) => {
                let url = super::support::pg_url();
                let joiner = if url.contains('?') { '&' } else { '?' };
                let url = format!("{url}{joiner}application_name={}", writer_name(schema));
                vec!["postgres".into(), url, schema.name.clone()]
            }
        }
    }

    /// Waits until the killed writer's work is over. A PostgreSQL backend
    /// outlives its killed client until it notices the closed socket, and
    /// finishes a `COMMIT` it already received: read before then, the shards
    /// would be seen some before and some after that commit.
    fn settle(&self) {
        let Target::Postgres(schema) = self else {
            return;
        };
        let name = writer_name(schema);
        let url = super::support::pg_url();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("the database answers");
            tokio::spawn(conn);
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let row = client
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                        &[&name],
                    )
                    .await
                    .expect("pg_stat_activity");
                if row.get::<_, i64>(0) == 0 {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the killed writer's database sessions ended"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
    }

    fn open(&self) -> Box<dyn WorldStore> {
        match self {
            Target::Redb(path) => Box::new(RedbStore::open(path).expect("a killed store reopens")),
            Target::Postgres(schema) => {
                Box::new(hoard_engine::store::PgStore::open(&schema.options()).expect("the database reopens"))
            }
        }
    }
}

const SHARDS: u64 = 4;
const MARKER_BASE: u64 = 1_000_000;
const MOVER: u64 = 42;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Runs the writer until it has acknowledged `acks` commits (0: kill at once),
/// waits a random few hundred microseconds, kills it. Returns the last acknowledged commit.
fn run_and_kill(target: &Target, acks: u64, rng: &mut fastrand::Rng) -> u64 {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hoard-engine-crash-writer"))
        .args(target.args())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn writer");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut last = 0;
    let mut seen = 0;
    while seen < acks {
        match lines.next() {
            Some(Ok(line)) => {
                last = line.strip_prefix("ok ").and_then(|n| n.parse().ok()).expect("ok N");
                seen += 1;
            }
            _ => break,
        }
    }
    // The random moment within the next commit.
    std::thread::sleep(Duration::from_micros(rng.u64(0..3000)));
    child.kill().expect("SIGKILL");
    // Lines already in the pipe were written after their commit returned.
    for line in lines.map_while(Result::ok) {
        last = line.strip_prefix("ok ").and_then(|n| n.parse().ok()).expect("ok N");
    }
    let status = child.wait().expect("wait");
    if acks > seen {
        let mut err = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            use std::io::Read;
            let _ = stderr.read_to_string(&mut err);
        }
        panic!("writer exited early ({status}): {err}");
    }
    last
}

/// The application name the writer's database sessions carry.
fn writer_name(schema: &PgSchema) -> String {
    format!("crash_writer_{}", schema.name)
}

fn check(target: &Target, acked: u64) -> u64 {
    target.settle();
    let store = target.open();
    let store = &*store;
    if store.zones().expect("zones").is_empty() {
        assert_eq!(acked, 0, "acknowledged commits vanished with the zone");
        return 0;
    }
    let markers: Vec<u64> = (0..SHARDS)
        .map(|s| {
            store
                .snapshot(ShardId(s))
                .expect("snapshot")
                .objects
                .iter()
                .find(|o| o.id == ObjectId(MARKER_BASE + s))
                .map_or(0, |o| o.version.0)
        })
        .collect();
    let committed = markers[0];
    assert!(
        markers.iter().all(|&m| m == committed),
        "half-applied commit: markers {markers:?}"
    );
    assert!(
        committed >= acked,
        "acknowledged commit {acked} lost, store has {committed}"
    );
    assert!(
        committed <= acked + 1,
        "store has {committed}, more than one past the last ack {acked}"
    );
    let holders: Vec<u64> = (0..SHARDS)
        .filter(|&s| {
            store
                .snapshot(ShardId(s))
                .expect("snapshot")
                .objects
                .iter()
                .any(|o| o.id == ObjectId(MOVER))
        })
        .collect();
    if committed > 0 {
        assert_eq!(
            holders,
            vec![committed % SHARDS],
            "moved object must exist exactly once"
        );
    }
    let damage = verify(store).expect("verify");
    assert!(damage.is_empty(), "{damage:?}");
    committed
}

fn kill_repeatedly(target: &Target, kills: u64) {
    let seed = env_u64("HOARD_CRASH_SEED", fastrand::u64(..));
    println!("crash test: {kills} kills, HOARD_CRASH_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut total = 0;
    for round in 0..kills {
        // One round in ten kills during startup, before any commit is acknowledged.
        let acks = if round % 10 == 3 { 0 } else { rng.u64(1..25) };
        let acked = run_and_kill(target, acks, &mut rng).max(total);
        total = check(target, acked);
    }
    assert!(total > kills, "the writer made progress: {total} commits");
}

#[test]
fn sigkill_during_commits_loses_no_acknowledged_commit_and_applies_none_by_half() {
    let dir = tempfile::tempdir().expect("tempdir");
    kill_repeatedly(
        &Target::Redb(dir.path().join("world.redb")),
        env_u64("HOARD_CRASH_KILLS", 50),
    );
}

#[test]
fn sigkill_during_postgres_commits_loses_no_acknowledged_commit_and_applies_none_by_half() {
    kill_repeatedly(&Target::Postgres(PgSchema::new()), env_u64("HOARD_CRASH_KILLS", 30));
}
