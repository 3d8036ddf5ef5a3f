//! PostgreSQL over TLS: the services' pools (`platform::db`) connect with
//! `sslmode=verify-full&sslrootcert=<CA file>` and refuse a server they cannot verify.
//!
//! The shared local PostgreSQL cannot carry a certificate of the test's making, so the test runs a
//! PostgreSQL of its own (the machine's `initdb` / `postgres` binaries, as the `postgres` user when
//! the test runs as root) with a server certificate for `localhost` signed by a CA the test makes,
//! and a `pg_hba.conf` that accepts TLS connections only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use platform::config::DatabaseSettings;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A certificate authority made for one test.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    /// A server certificate for `names` and its key, both PEM.
    fn server_certificate(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = CertificateParams::new(names).expect("server parameters");
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("server certificate");
        (cert.pem(), key.serialize_pem())
    }
}

/// A PostgreSQL of the test's own on a free port of 127.0.0.1, stopped when dropped.
struct TlsPostgres {
    _dir: tempfile::TempDir,
    port: u16,
    server: Child,
}

impl TlsPostgres {
    /// Starts a PostgreSQL whose certificate is `cert_pem` / `key_pem`, accepting only TLS.
    fn start(cert_pem: &str, key_pem: &str) -> Self {
        let bin = postgres_bin_dir();
        let dir = tempfile::tempdir().expect("temporary directory");
        let data = dir.path().join("data");
        let cert = dir.path().join("server.crt");
        let key = dir.path().join("server.key");
        let hba = dir.path().join("pg_hba.conf");
        std::fs::write(&cert, cert_pem).expect("write certificate");
        std::fs::write(&key, key_pem).expect("write key");
        // PostgreSQL refuses a key that others can read.
        set_mode(&key, 0o600);
        // TLS or nothing: a plain connection finds no entry.
        std::fs::write(
            &hba,
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
        )
        .expect("write pg_hba.conf");

        let owner = server_owner();
        if let Some((uid, gid)) = owner {
            for path in [dir.path(), &cert, &key, &hba] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to postgres");
            }
        }

        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args(["--auth=trust", "--username=postgres", "--no-sync", "-D"])
            .arg(&data)
            .env("LC_ALL", "C")
            .stdout(Stdio::null());
        as_owner(&mut initdb, owner);
        let status = initdb.status().expect("run initdb");
        assert!(status.success(), "initdb failed: {status}");

        let port = free_port();
        let mut postgres = Command::new(bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.path().display()))
            .args(["-c", "ssl=on"])
            .arg("-c")
            .arg(format!("ssl_cert_file={}", cert.display()))
            .arg("-c")
            .arg(format!("ssl_key_file={}", key.display()))
            .arg("-c")
            .arg(format!("hba_file={}", hba.display()))
            .env("LC_ALL", "C")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        as_owner(&mut postgres, owner);
        let server = postgres.spawn().expect("start postgres");

        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the test's PostgreSQL did not listen on port {port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            _dir: dir,
            port,
            server,
        }
    }

    fn url(&self, host: &str, query: &str) -> DatabaseSettings {
        DatabaseSettings {
            url: format!("postgres://postgres@{host}:{}/postgres?{query}", self.port),
            max_connections: 2,
        }
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        // SIGINT is PostgreSQL's fast shutdown: backends end, nothing is left behind.
        let _ = Command::new("kill")
            .args(["-INT", &self.server.id().to_string()])
            .status();
        let _ = self.server.wait();
    }
}

fn postgres_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CONNECX_TEST_PG_BINDIR") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort_by_key(|bin| {
        bin.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
    });
    found.pop().expect(
        "PostgreSQL's server binaries (initdb, postgres) not found under /usr/lib/postgresql/*/bin; \
         set CONNECX_TEST_PG_BINDIR to their directory",
    )
}

/// The `postgres` user's uid and gid when the test runs as root (PostgreSQL will not run as
/// root), or `None` to run it as ourselves.
fn server_owner() -> Option<(u32, u32)> {
    let id = |args: &[&str]| -> u32 {
        let out = Command::new("id").args(args).output().expect("run id");
        assert!(
            out.status.success(),
            "`id {}` failed: the test needs the `postgres` user when run as root",
            args.join(" ")
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("id prints a number")
    };
    if id(&["-u"]) != 0 {
        return None;
    }
    Some((id(&["-u", "postgres"]), id(&["-g", "postgres"])))
}

fn as_owner(command: &mut Command, owner: Option<(u32, u32)>) {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn write_ca(dir: &Path, ca: &TestCa, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, ca.issuer.pem()).expect("write CA");
    path
}

#[tokio::test]
async fn verify_full_connects_only_to_the_server_its_ca_vouches_for_by_name() {
    let ca = TestCa::new("connecX test CA");
    let (cert, key) = ca.server_certificate(&["localhost"]);
    let server = TlsPostgres::start(&cert, &key);
    let files = tempfile::tempdir().expect("temporary directory");
    let ca_file = write_ca(files.path(), &ca, "ca.pem");
    let verify_full = format!("sslmode=verify-full&sslrootcert={}", ca_file.display());

    // The right CA and the name on the certificate: a pool of the service's kind, over TLS.
    let settings = server.url("localhost", &verify_full);
    let pool = platform::db::connect_pool(&settings, "tls_check", 2)
        .await
        .expect("verify-full with the server's CA connects");
    let over_tls: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .expect("read pg_stat_ssl");
    assert!(over_tls, "the connection is encrypted");
    let schema: String = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(&pool)
        .await
        .expect("current schema");
    assert_eq!(
        schema, "tls_check",
        "the service's schema was made over TLS too"
    );
    pool.close().await;

    // A name the certificate does not carry: refused, although the CA is right.
    let by_address = server.url("127.0.0.1", &verify_full);
    let refused = platform::db::connect_pool(&by_address, "tls_check", 2).await;
    assert!(refused.is_err(), "verify-full checks the host name");

    // A server signed by another CA: refused.
    let stranger = TestCa::new("someone else's CA");
    let other_ca = write_ca(files.path(), &stranger, "other-ca.pem");
    let other = server.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", other_ca.display()),
    );
    let refused = platform::db::connect_pool(&other, "tls_check", 2).await;
    assert!(
        refused.is_err(),
        "a certificate from an unknown CA is refused"
    );

    // And the server takes nothing in clear (so the successes above were TLS).
    let plain = server.url("localhost", "sslmode=disable");
    let refused = platform::db::connect_pool(&plain, "tls_check", 2).await;
    assert!(
        refused.is_err(),
        "a plain connection is refused by this server"
    );
}

#[tokio::test]
async fn the_settings_accept_a_verify_full_url_and_name_an_unreadable_ca_file() {
    use platform::config::Validate;
    let files = tempfile::tempdir().expect("temporary directory");
    let ca = write_ca(files.path(), &TestCa::new("connecX test CA"), "ca.pem");
    let good = DatabaseSettings {
        url: format!(
            "postgres://connecx:secret@db.internal:5432/connecx?sslmode=verify-full&sslrootcert={}",
            ca.display()
        ),
        max_connections: 10,
    };
    good.validate().expect("a readable CA file is accepted");

    let missing = DatabaseSettings {
        url: "postgres://connecx:secret@db.internal/connecx?sslmode=verify-full&sslrootcert=/no/such/ca.pem"
            .to_owned(),
        max_connections: 10,
    };
    let err = missing
        .validate()
        .expect_err("an unreadable CA file is refused")
        .to_string();
    assert!(
        err.contains("/no/such/ca.pem") && err.contains("CONNECX__DATABASE__URL"),
        "{err}"
    );
    assert!(!err.contains("secret"), "{err}");
}
