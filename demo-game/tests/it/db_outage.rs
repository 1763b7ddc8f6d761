//! A zone server rides out a database outage. The test starts a PostgreSQL
//! of its own (initdb in a temporary directory, on a free loopback port),
//! serves meadow from it with two-second leases, and stops the database for
//! less than a lease and for more than one: the server keeps running and
//! keeps its lease (the same fencing token), and a player's actions after
//! the database returns are applied and confirmed.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::private_pg::PrivatePostgres;
use super::server_client::{demo, generate_world, token};

/// A process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The zone lease on `zone`: (owner, token).
fn lease(url: &str, zone: &str) -> (String, i64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        let row = client
            .query_one("SELECT owner, token FROM hoard_zone_leases WHERE zone = $1", &[&zone])
            .await
            .expect("the lease");
        (row.get(0), row.get(1))
    })
}

/// Moves `player` to `x` in meadow through the server at `addr`, retrying
/// while the server cannot act yet (the database just came back), at most
/// 30 s; returns how long it took.
fn act_until_applied(addr: &str, cache: &Path, player_token: &str, x: u16) -> Duration {
    let started = Instant::now();
    let act = format!(r#"{{"Move":{{"zone":0,"x":{x},"y":41}}}}"#);
    loop {
        let out = super::server_client::headless(addr, "meadow", player_token)
            .arg("--cache-dir")
            .arg(cache)
            .args(["--act", &act])
            .output()
            .expect("client");
        if out.status.success() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the move was not applied within 30 s: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_zone_server_rides_out_database_outages_shorter_and_longer_than_its_lease() {
    let pg = PrivatePostgres::start();
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    generate_world(&data.path().join("world-files"));
    let addr = format!(
        "127.0.0.1:{}",
        std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a free port")
            .port()
    );
    let mut child = demo()
        .args(["server", "--listen", &addr, "--tick-hz", "50", "--world"])
        .arg(data.path().join("world-files"))
        .arg("--data")
        .arg(data.path())
        .args([
            "--store",
            &pg.url(),
            "--zones",
            "meadow,forest",
            "--name",
            "alpha",
            "--lease-secs",
            "2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("a line");
    assert!(line.contains("\"listening\""), "{line}");
    // Its log, read as it comes (a full pipe would stall the server).
    let stderr = child.stderr.take().expect("stderr");
    let (log_tx, log) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if log_tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut lines = Vec::new();
    let mut backs = 0;
    let mut server = Proc(child);
    let ann = token(data.path(), "ann");
    act_until_applied(&addr, cache.path(), &ann, 40);
    let before = lease(&pg.url(), "meadow");
    assert_eq!(before.0, "alpha");

    for (outage, x) in [(Duration::from_millis(800), 41), (Duration::from_secs(5), 42)] {
        pg.down();
        let down = Instant::now();
        // The outage's length is the fault under test.
        std::thread::sleep(outage);
        assert!(
            server.0.try_wait().expect("wait").is_none(),
            "the server stopped during a {outage:?} outage"
        );
        pg.up();
        let applied = act_until_applied(&addr, cache.path(), &ann, x);
        println!(
            "database down {} ms: the next move applied {} ms after it returned",
            outage.as_millis(),
            applied.as_millis()
        );
        assert!(
            server.0.try_wait().expect("wait").is_none(),
            "the server stopped after the outage"
        );
        assert_eq!(
            lease(&pg.url(), "meadow"),
            before,
            "the same lease, on the same fencing token, after {:?} down",
            down.elapsed()
        );
        // Its lease renewal notices the return in its own time (within a
        // third of a lease).
        let deadline = Instant::now() + Duration::from_secs(10);
        while !lines.iter().any(|l: &String| l.contains("the database is back")) {
            let left = deadline.saturating_duration_since(Instant::now());
            lines.push(log.recv_timeout(left).expect("the server logs the database's return"));
        }
        lines.retain(|l| !l.contains("the database is back"));
        backs += 1;
    }

    // One line when the database went, one when it came back: not one per retry.
    drop(server);
    lines.extend(log.iter());
    let log = lines;
    let went = log.iter().filter(|l| l.contains("the database is unreachable")).count();
    let back = backs + log.iter().filter(|l| l.contains("the database is back")).count();
    assert!((1..=2).contains(&went), "{went} lines for the database going: {log:#?}");
    assert!((1..=2).contains(&back), "{back} lines for its return");
}
