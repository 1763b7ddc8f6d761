//! The server's start-up on a bad day, as processes: a first import killed
//! at random moments is refused on restart (never served as a whole world),
//! and a damaged store stops the server with a message, in agreement with
//! `hoard-demo store verify`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::server_client::{demo, generate_world};

/// Starts a server on `data`; returns its first stdout line (the listening
/// JSON) or, if it exits first, its exit code and stderr.
fn start(data: &Path, world: &Path) -> Result<(std::process::Child, serde_json::Value), (Option<i32>, String)> {
    start_on(data, world, "127.0.0.1:0")
}

/// [`start`] listening on `listen`.
fn start_on(
    data: &Path,
    world: &Path,
    listen: &str,
) -> Result<(std::process::Child, serde_json::Value), (Option<i32>, String)> {
    let mut child = demo()
        .args(["server", "--listen", listen, "--world"])
        .arg(world)
        .arg("--data")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start server");
    let mut line = String::new();
    let read = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
    if matches!(read, Ok(n) if n > 0) {
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        return Ok((child, v));
    }
    let out = child.wait_with_output().expect("wait");
    Err((out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned()))
}

fn stop(mut child: std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_first_import_killed_midway_is_refused_never_served_in_part() {
    let dir = tempfile::tempdir().expect("tempdir");
    let world = dir.path().join("world");
    let status = demo()
        .args([
            "world",
            "generate",
            "--zones",
            "4",
            "--objects-per-zone",
            "3000",
            "--out",
        ])
        .arg(&world)
        .stdout(Stdio::null())
        .status()
        .expect("generate");
    assert!(status.success());
    // A whole import, timed, for the kill moments.
    let whole = dir.path().join("whole");
    let began = Instant::now();
    let (child, listening) = start(&whole, &world).expect("a first start imports and serves");
    let import_time = began.elapsed();
    let zones = listening["zones"].clone();
    assert_eq!(zones.as_array().map(Vec::len), Some(4));
    stop(child);

    let mut rng = fastrand::Rng::new();
    let (mut refused, mut served) = (0, 0);
    for round in 0..6 {
        let data = dir.path().join(format!("round-{round}"));
        let mut child = demo()
            .args(["server", "--listen", "127.0.0.1:0", "--world"])
            .arg(&world)
            .arg("--data")
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start server");
        let at = import_time.mul_f64(rng.f64());
        std::thread::sleep(at);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        match start(&data, &world) {
            Ok((child, listening)) => {
                // Only a finished import may be served, and then all of it.
                assert_eq!(listening["zones"], zones, "round {round}: a whole world");
                served += 1;
                stop(child);
            }
            Err((code, stderr)) => {
                assert_eq!(code, Some(1), "round {round}: refused with exit code 1\n{stderr}");
                // An import cut short. (A store file cut short while it was
                // being created is no longer possible: it is made under a
                // temporary name and renamed into place whole.)
                assert!(
                    ["did not finish", "empty (0 bytes)", "corrupt", "damaged"]
                        .iter()
                        .any(|why| stderr.contains(why)),
                    "round {round}: says what is wrong: {stderr}"
                );
                assert!(!stderr.contains("panicked"), "round {round}: no panic: {stderr}");
                assert!(stderr.contains("world.redb"), "round {round}: names the file: {stderr}");
                refused += 1;
            }
        }
    }
    println!("first-import kills: {refused} refused, {served} served whole (import took {import_time:?})");
}

#[test]
fn a_damaged_store_stops_the_server_with_a_message_as_store_verify_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let world = dir.path().join("world");
    generate_world(&world);
    let data = dir.path().join("data");
    let (child, _) = start(&data, &world).expect("first start");
    stop(child);
    let path = data.join("world.redb");
    let mut bytes = std::fs::read(&path).expect("read store");
    // Zero a run in the middle of the file, where the trees live.
    let middle = bytes.len() / 2;
    bytes[middle..middle + 16 * 1024].fill(0);
    std::fs::write(&path, &bytes).expect("write");
    let verify = demo()
        .args(["store", "verify", "--data"])
        .arg(&data)
        .output()
        .expect("store verify");
    let began = Instant::now();
    match start(&data, &world) {
        Ok((child, _)) => {
            stop(child);
            assert!(verify.status.success(), "the server serves only what verify passes");
        }
        Err((code, stderr)) => {
            assert_eq!(code, Some(1), "{stderr}");
            assert!(stderr.contains("world.redb"), "names the file: {stderr}");
            assert!(!stderr.contains("panicked"), "no panic: {stderr}");
            assert_eq!(verify.status.code(), Some(1), "store verify finds the damage too");
        }
    }
    assert!(began.elapsed() < Duration::from_secs(60), "no hang");
}

/// A start-up refusal: exit code 1, no panic, and a last line
/// `hoard-demo: ...` naming the cause.
fn assert_refused(result: Result<(std::process::Child, serde_json::Value), (Option<i32>, String)>, cause: &str) {
    let (code, stderr) = match result {
        Ok((child, _)) => {
            stop(child);
            panic!("the server started; expected a refusal naming {cause:?}");
        }
        Err(refusal) => refusal,
    };
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "no panic: {stderr}");
    assert!(!stderr.contains("backtrace"), "no backtrace: {stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "no colour codes in a log that is not a terminal: {stderr}"
    );
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("hoard-demo: "), "one line with the error: {stderr}");
    assert!(last.contains(cause), "names {cause:?}: {stderr}");
}

#[test]
fn start_up_errors_exit_1_with_one_line_naming_the_cause() {
    let dir = tempfile::tempdir().expect("tempdir");
    let world = dir.path().join("world");
    generate_world(&world);
    let data = dir.path().join("data");
    let (first, listening) = start(&data, &world).expect("first start");
    let addr = listening["addr"].as_str().expect("addr").to_owned();

    // A second server on an address in use.
    assert_refused(start_on(&dir.path().join("second"), &world, &addr), "cannot listen on");
    stop(first);

    // An address on no interface of this machine (TEST-NET-1).
    assert_refused(start_on(&data, &world, "192.0.2.1:0"), "cannot listen on 192.0.2.1");

    // A damaged key file.
    std::fs::write(data.join("server.key.der"), b"not a key").expect("write key");
    assert_refused(start(&data, &world), "server.key.der");
    let leftovers: Vec<_> = std::fs::read_dir(&data)
        .expect("data dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary files left: {leftovers:?}");
}
