//! A PostgreSQL server of a test's own: initdb in a temporary directory,
//! started on a free loopback port with PostgreSQL's own binaries (never
//! the machine's service), optionally serving TLS only, with a certificate
//! the test makes; stopped and removed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A PostgreSQL server of the test's own, stopped and removed when dropped.
pub(crate) struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// Serves TLS with `server.crt`/`server.key` in its data directory, and
    /// only TLS on TCP.
    tls: bool,
}

/// A server certificate and key, PEM.
pub(crate) struct ServerTls {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

impl PrivatePostgres {
    /// initdb and start, trusting local connections, on a free port.
    pub(crate) fn start() -> PrivatePostgres {
        PrivatePostgres::start_with(None)
    }

    /// The same, serving TCP connections over TLS only, with `tls`'s
    /// certificate (plain TCP connections are rejected).
    pub(crate) fn start_tls(tls: &ServerTls) -> PrivatePostgres {
        PrivatePostgres::start_with(Some(tls))
    }

    fn start_with(tls: Option<&ServerTls>) -> PrivatePostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's binaries under /usr/lib/postgresql (.ci/run installs them)")
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .find(|b| b.join("initdb").exists())
            .expect("initdb");
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let pg = PrivatePostgres {
            dir,
            bin,
            port,
            tls: tls.is_some(),
        };
        let data = pg.data();
        std::fs::create_dir(&data).expect("data dir");
        if is_root() {
            // initdb refuses root: the cluster belongs to the postgres user.
            chmod(pg.dir.path(), "755");
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&data)
                .status()
                .expect("chown");
            assert!(status.success());
        }
        let status = pg
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--no-sync"])
            .stdout(Stdio::null())
            .status()
            .expect("initdb");
        assert!(status.success(), "initdb failed");
        if let Some(tls) = tls {
            std::fs::write(data.join("server.crt"), &tls.cert_pem).expect("server.crt");
            std::fs::write(data.join("server.key"), &tls.key_pem).expect("server.key");
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
            )
            .expect("pg_hba.conf");
            // PostgreSQL takes a key only its owner can read.
            chmod(&data.join("server.key"), "600");
            if is_root() {
                let status = Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(data.join("server.crt"))
                    .arg(data.join("server.key"))
                    .arg(data.join("pg_hba.conf"))
                    .status()
                    .expect("chown");
                assert!(status.success());
            }
        }
        pg.up();
        pg
    }

    pub(crate) fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `program` of PostgreSQL's, as the postgres user when the test is root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if is_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        }
    }

    fn pg_ctl(&self, args: &[&str]) {
        let mut options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.data().display()
        );
        if self.tls {
            options.push_str(" -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key");
        }
        let status = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-o", &options, "-l"])
            .arg(self.data().join("log"))
            .args(args)
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl");
        assert!(status.success(), "pg_ctl {args:?} failed");
    }

    /// Starts it and waits until it accepts connections.
    pub(crate) fn up(&self) {
        self.pg_ctl(&["-w", "start"]);
    }

    /// Stops it at once (clients' connections are cut).
    pub(crate) fn down(&self) {
        self.pg_ctl(&["-w", "-m", "immediate", "stop"]);
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-w", "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn chmod(path: &Path, mode: &str) {
    let status = Command::new("chmod").arg(mode).arg(path).status().expect("chmod");
    assert!(status.success());
}
