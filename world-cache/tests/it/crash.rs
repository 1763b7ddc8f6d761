//! kill -9 during cache writes: a real child process writes and journals
//! shards in a loop and is SIGKILLed at random points, at least 100 times.
//! Afterwards every shard loads as a complete state (all its objects at the
//! generation its hwm names) no older than the last acknowledged write, or
//! is missing — never a mixture.
//!
//! `HOARD_CACHE_CRASH_KILLS` raises the count; `HOARD_CACHE_CRASH_SEED` replays a run.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use hoard_world_cache::{LockPolicy, WorldCache};

use super::support::{REGISTRY, key};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn run_and_kill(root: &std::path::Path, acks: u64, rng: &mut fastrand::Rng, acked: &mut HashMap<u64, u64>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hoard-cache-crash-writer"))
        .arg(root)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn writer");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let record = |line: String, acked: &mut HashMap<u64, u64>| {
        let mut parts = line
            .split_whitespace()
            .skip(1)
            .map(|p| p.parse::<u64>().expect("number"));
        let (s, n) = (parts.next().expect("shard"), parts.next().expect("hwm"));
        acked.insert(s, n);
    };
    for _ in 0..acks {
        match lines.next() {
            Some(Ok(line)) => record(line, acked),
            _ => panic!("writer exited early"),
        }
    }
    std::thread::sleep(Duration::from_micros(rng.u64(0..2000)));
    child.kill().expect("SIGKILL");
    for line in lines.map_while(Result::ok) {
        record(line, acked);
    }
    child.wait().expect("wait");
}

#[test]
fn sigkill_during_writes_leaves_complete_old_or_new_shards() {
    let kills = env_u64("HOARD_CACHE_CRASH_KILLS", 100);
    let seed = env_u64("HOARD_CACHE_CRASH_SEED", fastrand::u64(..));
    println!("cache crash test: {kills} kills, HOARD_CACHE_CRASH_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acked: HashMap<u64, u64> = HashMap::new();
    for round in 0..kills {
        let acks = if round % 10 == 0 { 0 } else { rng.u64(1..12) };
        run_and_kill(dir.path(), acks, &mut rng, &mut acked);
        let cache = WorldCache::open(dir.path(), LockPolicy::Wait).expect("the killed writer's lock is released");
        for s in 0..4u64 {
            let loaded = cache.load(&key_for(s), REGISTRY);
            let Some(shard) = loaded else {
                assert!(!acked.contains_key(&s), "shard {s}: acknowledged writes vanished");
                continue;
            };
            let n = shard.header.hwm.0;
            assert!(
                n >= acked.get(&s).copied().unwrap_or(0),
                "shard {s}: hwm {n} older than the last ack"
            );
            assert_eq!(shard.objects.len(), 40, "shard {s}: partial object set");
            for o in &shard.objects {
                assert_eq!(o.version.0, n, "shard {s}: object {} from another generation", o.id);
                let parts = o.state.components().expect("canonical");
                assert_eq!(
                    parts[0].1,
                    n.to_le_bytes(),
                    "shard {s}: object {} state from another generation",
                    o.id
                );
            }
        }
        assert_eq!(cache.verify().len(), 0, "{:?}", cache.verify());
    }
}

fn key_for(s: u64) -> hoard_world_cache::ShardKey {
    let mut k = key(s);
    k.zone = hoard_engine::ZoneId::new("crash").expect("zone");
    k
}
