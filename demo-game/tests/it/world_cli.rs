//! The modder's tools as processes: validate points at every problem by
//! file, line and column; generate is deterministic; import then export
//! gives the files back; render writes a PNG; and a mod applied offline to a
//! server's store reaches a returning client as a delta.

use std::path::Path;

use crate::server_client::{demo, enter, generate_world, headless, server, some_item, token};

fn run(args: &[&str], paths: &[(&str, &Path)]) -> std::process::Output {
    let mut cmd = demo();
    cmd.args(args);
    for (flag, path) in paths {
        cmd.arg(flag).arg(path);
    }
    cmd.output().expect("hoard-demo")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every file under `dir`, relative path → bytes.
fn tree(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    for zone in std::fs::read_dir(dir).expect("dir") {
        let zone = zone.expect("entry").path();
        for file in std::fs::read_dir(&zone).expect("zone dir") {
            let file = file.expect("entry").path();
            let name = file.strip_prefix(dir).expect("under dir").display().to_string();
            out.insert(name, std::fs::read(&file).expect("read"));
        }
    }
    out
}

#[test]
fn validate_reports_every_problem_with_file_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let world = dir.path().join("world");
    generate_world(&world);
    let ok = run(&["world", "validate"], &[("--world", &world)]);
    assert!(ok.status.success(), "{}", text(&ok.stdout));
    assert!(text(&ok.stdout).contains("no problem"));

    // Line 4 of meadow/0.scn.ron is its first terrain row (after the zone object): break its tiles.
    let first = world.join("meadow/0.scn.ron");
    let original = std::fs::read_to_string(&first).expect("read");
    let lines: Vec<&str> = original.lines().collect();
    assert!(lines[3].contains("\"terrain\""), "{}", lines[3]);
    let broken = original.replacen(lines[3], &lines[3].replacen("tiles: \"", "tiles: \"x", 1), 1);
    std::fs::write(&first, broken).expect("write");
    // And misspell a field in another zone's file, on its last entity line.
    let second = world.join("forest/1001.scn.ron");
    let text2 = std::fs::read_to_string(&second).expect("read");
    let n = text2.lines().count() - 2;
    let line = text2.lines().nth(n - 1).expect("line").to_owned();
    let misspelt = line.replacen("x: ", "ex: ", 1);
    std::fs::write(&second, text2.replacen(&line, &misspelt, 1)).expect("write");

    let out = run(&["world", "validate"], &[("--world", &world)]);
    assert_eq!(out.status.code(), Some(1));
    let report = text(&out.stdout);
    let found: Vec<&str> = report.lines().collect();
    assert_eq!(found.len(), 2, "{report}");
    assert!(found[0].contains(&format!("forest/1001.scn.ron:{n}:")), "{report}");
    assert!(found[0].contains("ex"), "{report}");
    assert!(found[1].contains("meadow/0.scn.ron:4:"), "{report}");
    assert!(found[1].contains("`x` is not a tile"), "{report}");
    assert!(text(&out.stderr).contains("2 problem(s)"));
}

#[test]
fn unreadable_and_misnamed_world_files_are_reported_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let world = dir.path().join("world");
    generate_world(&world);
    std::fs::write(world.join("meadow/0.scn.ron"), [0xff, 0xfe, 0x00, 0x28]).expect("write");
    // A file claiming 65 MiB (sparse: nothing is written) is refused unread.
    let huge = std::fs::File::create(world.join("forest/1000.scn.ron")).expect("create");
    huge.set_len(65 * 1024 * 1024).expect("set_len");
    std::fs::write(world.join("meadow/notes.ron"), "()").expect("write");
    std::fs::write(world.join("meadow/first.scn.ron"), "()").expect("write");
    std::fs::create_dir_all(world.join("Not A Zone")).expect("mkdir");
    // A FIFO named like a world file would block a reader for ever.
    let fifo = world.join("meadow/1.scn.ron");
    std::fs::remove_file(&fifo).ok();
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success(), "mkfifo");

    let out = run(&["world", "validate"], &[("--world", &world)]);
    assert_eq!(out.status.code(), Some(1));
    let report = text(&out.stdout);
    for (file, sentence) in [
        ("meadow/0.scn.ron:1:1", "not UTF-8 text"),
        ("forest/1000.scn.ron:1:1", "a world file is at most"),
        ("meadow/notes.ron:1:1", "named after their shard"),
        ("meadow/first.scn.ron:1:1", "`first` is not a shard number"),
        ("Not A Zone:1:1", "not a zone name"),
        ("meadow/1.scn.ron:1:1", "not a regular file"),
    ] {
        assert!(
            report.lines().any(|l| l.contains(file) && l.contains(sentence)),
            "{file}: {sentence}\n{report}"
        );
    }
}

#[test]
fn generate_is_deterministic_import_export_round_trips_and_render_draws() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b, c) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("c"));
    for (out, seed) in [(&a, "9"), (&b, "9"), (&c, "10")] {
        let o = run(
            &[
                "world",
                "generate",
                "--zones",
                "2",
                "--objects-per-zone",
                "300",
                "--seed",
                seed,
            ],
            &[("--out", out)],
        );
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    assert_eq!(tree(&a), tree(&b), "same seed, same bytes");
    assert_ne!(tree(&a), tree(&c), "another seed, another world");

    let data = dir.path().join("data");
    let import = run(&["world", "import"], &[("--data", &data), ("--world", &a)]);
    assert!(import.status.success(), "{}", text(&import.stderr));
    let again = run(&["world", "import"], &[("--data", &data), ("--world", &a)]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already holds a world"),
        "{}",
        text(&again.stderr)
    );
    let exported = dir.path().join("exported");
    let export = run(&["world", "export"], &[("--data", &data), ("--out", &exported)]);
    assert!(export.status.success(), "{}", text(&export.stderr));
    assert_eq!(tree(&exported), tree(&a), "export gives back the imported files");

    let png = dir.path().join("forest.png");
    let render = run(
        &["world", "render", "--zone", "forest", "--scale", "2"],
        &[("--data", &data), ("--out", &png)],
    );
    assert!(render.status.success(), "{}", text(&render.stderr));
    let bytes = std::fs::read(&png).expect("png");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    // IHDR: width and height, big-endian, at bytes 16..24.
    assert_eq!(&bytes[16..24], &[0, 0, 2, 0, 0, 0, 2, 0]);
    let missing = run(
        &["world", "render", "--zone", "atlantis"],
        &[("--world", &a), ("--out", &png)],
    );
    assert!(
        text(&missing.stderr).contains("no zone atlantis"),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn a_mod_applied_offline_reaches_a_client_as_a_delta() {
    let data = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let first = server(data.path());
    let ann = token(data.path(), "ann");
    let cold = enter(&first, cache.path(), &ann, "meadow");
    assert_eq!(cold["shards_snapshot"], 64);
    drop(first);

    // A mod that changes one item and adds a gold nugget beside it.
    let (id, x, y, shard) = some_item(cache.path());
    let mod_dir = data.path().join("gold-rush");
    std::fs::create_dir_all(mod_dir.join("meadow")).expect("mkdir");
    std::fs::write(
        mod_dir.join(format!("meadow/{shard}.scn.ron")),
        format!(
            "// gold rush\n(\n    entities: {{\n        {id}: (components: {{\"item\": (kind: \"gold\", count: 99, x: {x}, y: {y})}}),\n        1000000: (components: {{\"item\": (kind: \"gold\", count: 1, x: {x}, y: {y})}}),\n    }},\n)\n"
        ),
    )
    .expect("write mod");
    let diff = run(
        &["world", "diff"],
        &[("--world", &data.path().join("world-files")), ("--mod", &mod_dir)],
    );
    assert!(diff.status.success(), "{}", text(&diff.stderr));
    assert!(
        text(&diff.stdout).contains("1 added, 1 changed, 0 removed"),
        "{}",
        text(&diff.stdout)
    );
    let apply = run(&["world", "apply"], &[("--data", data.path()), ("--mod", &mod_dir)]);
    assert!(apply.status.success(), "{}", text(&apply.stderr));
    assert!(
        text(&apply.stdout).contains("1 added, 1 changed, 0 removed"),
        "{}",
        text(&apply.stdout)
    );

    let second = server(data.path());
    let out = headless(&second.addr, "meadow", &ann)
        .args(["--expect-item", &format!("1000000:{x}:{y}"), "--cache-dir"])
        .arg(cache.path())
        .output()
        .expect("client");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let entry = &lines[0];
    assert_eq!(entry["event"], "zone_ready");
    assert_eq!(
        (
            entry["shards_delta"].as_u64(),
            entry["shards_fresh"].as_u64(),
            entry["shards_snapshot"].as_u64()
        ),
        (Some(1), Some(63), Some(0)),
        "{entry}"
    );
    let bytes = entry["bytes_rx"].as_u64().expect("rx");
    assert!(bytes < 8 * 1024, "the delta of two objects cost {bytes} bytes");
    assert_eq!(lines[1]["event"], "item", "{}", lines[1]);
}

#[test]
fn a_store_made_by_world_import_is_served() {
    // MODDING.md's workflow: import a world into a data directory, then
    // serve it. The import writes the same completion marker as a server's
    // own first start, so the server takes the store as a whole world.
    let data = tempfile::tempdir().expect("tempdir");
    let world = data.path().join("world-files");
    generate_world(&world);
    let import = run(&["world", "import"], &[("--data", data.path()), ("--world", &world)]);
    assert!(import.status.success(), "{}", text(&import.stderr));
    let served = server(data.path());
    let cache = tempfile::tempdir().expect("tempdir");
    let ann = token(data.path(), "ann");
    let cold = enter(&served, cache.path(), &ann, "meadow");
    assert_eq!(cold["shards_snapshot"], 64, "{cold}");
}

#[test]
fn every_command_explains_itself_with_an_example() {
    let commands: &[&[&str]] = &[
        &["play"],
        &["server"],
        &["server", "token"],
        &["client"],
        &["cache"],
        &["cache", "inspect"],
        &["cache", "verify"],
        &["cache", "clear"],
        &["netsim"],
        &["world"],
        &["world", "validate"],
        &["world", "import"],
        &["world", "export"],
        &["world", "diff"],
        &["world", "apply"],
        &["world", "render"],
        &["world", "generate"],
    ];
    for command in commands {
        let out = demo().args(*command).arg("--help").output().expect("help");
        assert!(out.status.success(), "{command:?}");
        let help = text(&out.stdout);
        assert!(
            help.contains("Example: `hoard-demo "),
            "{command:?} has no example:\n{help}"
        );
    }
}

#[test]
fn generate_writes_as_many_objects_as_asked_and_says_when_houses_do_not_fit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = super::server_client::demo()
        .args([
            "world",
            "generate",
            "--zones",
            "1",
            "--objects-per-zone",
            "60000",
            "--out",
        ])
        .arg(dir.path().join("w"))
        .output()
        .expect("generate");
    assert!(out.status.success());
    // 60,000 houses and items, 2,048 terrain rows and the zone object.
    assert!(
        text(&out.stdout).contains("wrote 62049 objects"),
        "{}",
        text(&out.stdout)
    );
    let said = text(&out.stderr);
    assert!(
        said.contains("room for") && said.contains("objects are items"),
        "{said}"
    );
}

#[test]
fn validate_refuses_an_object_over_the_state_limit_as_import_would() {
    let dir = tempfile::tempdir().expect("tempdir");
    let world = dir.path().join("world");
    generate_world(&world);
    // Give an item a kind of 1.1 MB: a valid file, an object too big to store.
    let path = world.join("meadow/0.scn.ron");
    let text_before = std::fs::read_to_string(&path).expect("read");
    let huge = "x".repeat(1_100_000);
    let at = text_before.find("(kind: \"").expect("an item in chunk 0") + "(kind: \"".len();
    let end = at + text_before[at..].find('"').expect("closing quote");
    let changed = format!("{}{huge}{}", &text_before[..at], &text_before[end..]);
    std::fs::write(&path, changed).expect("write");
    let out = run(&["world", "validate"], &[("--world", &world)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let report = text(&out.stdout);
    assert!(
        report.contains("meadow/0.scn.ron") && report.contains("an object is at most 1048576 bytes"),
        "{report}"
    );
}

#[test]
fn validate_refuses_ids_at_the_top_of_the_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    let world = dir.path().join("world");
    generate_world(&world);
    let path = world.join("meadow/0.scn.ron");
    let before = std::fs::read_to_string(&path).expect("read");
    // Renumber the first house or item to u64::MAX.
    let at = before.find("(components: {\"item\"").expect("an item in chunk 0");
    let line_start = before[..at].rfind('\n').map_or(0, |i| i + 1);
    let id_end = line_start + before[line_start..].find(':').expect("id");
    let changed = format!("{}        {}{}", &before[..line_start], u64::MAX, &before[id_end..]);
    std::fs::write(&path, changed).expect("write");
    let out = run(&["world", "validate"], &[("--world", &world)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("is too high"), "{}", text(&out.stdout));
}
