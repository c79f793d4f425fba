//! The collector binary against a real Pushgateway started with `--web.config.file`: HTTPS with
//! a CA and server certificate generated here by the `openssl` CLI, and a bcrypt basic-auth
//! user. With the right CA and credentials the platform push and the janitor both work; with a
//! wrong password or a CA that did not sign the server's certificate, every push and janitor
//! round fails, is counted in the collector's own metrics and logged, and nothing crashes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Collector, activation, produce, sample, wait_for};
use whisk_testkit::{ServiceProcess, Tansu, free_port};

const USER: &str = "collector";
const PASSWORD: &str = "s3cret";
const LONG: Duration = Duration::from_secs(60);

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 signed by it, and a second CA that signed nothing.
fn make_certs(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(Command::new("openssl")
        .current_dir(dir)
        .args(["req", "-x509"])
        .args(ec)
        .args(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"])
        .args(["-subj", "/CN=whisk-collector-test-ca"]));
    run(Command::new("openssl")
        .current_dir(dir)
        .arg("req")
        .args(ec)
        .args(["-keyout", "server.key", "-out", "server.csr"])
        .args(["-subj", "/CN=127.0.0.1"]));
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(Command::new("openssl")
        .current_dir(dir)
        .args(["x509", "-req", "-in", "server.csr", "-CA", "ca.pem"])
        .args(["-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem"])
        .args(["-days", "2", "-extfile", "ext.cnf"]));
    run(Command::new("openssl")
        .current_dir(dir)
        .args(["req", "-x509"])
        .args(ec)
        .args(["-keyout", "other.key", "-out", "other-ca.pem", "-days", "2"])
        .args(["-subj", "/CN=some-other-ca"]));
}

/// bcrypt of `password` at the lowest cost (the Pushgateway checks it on every request).
fn bcrypt(password: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-W",
            "ignore",
            "-c",
            "import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))",
            password,
        ])
        .output()
        .expect("python3 runs");
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$2"), "no bcrypt hash: {hash:?}");
    hash
}

/// A Pushgateway with HTTPS and basic auth on a free loopback port.
struct SecurePushgateway {
    _process: Option<ServiceProcess>,
    port: u16,
    dir: PathBuf,
}

impl SecurePushgateway {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "whisk-collector-tls-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        make_certs(&dir);
        let config = format!(
            "basic_auth_users:\n  {USER}: '{}'\ntls_server_config:\n  cert_file: {}\n  key_file: {}\n",
            bcrypt(PASSWORD),
            dir.join("server.pem").display(),
            dir.join("server.key").display()
        );
        std::fs::write(dir.join("web.yml"), config).unwrap();
        std::fs::write(dir.join("password"), format!("{PASSWORD}\n")).unwrap();
        let port = free_port();
        let args = vec![
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--persistence.file=".to_string(),
            format!("--web.config.file={}", dir.join("web.yml").display()),
        ];
        let mut process = ServiceProcess::spawn(
            "pushgateway-secure",
            "prometheus-pushgateway",
            &args,
            "apt-get install -y prometheus-pushgateway",
        )
        .unwrap();
        let mut me = Self {
            _process: None,
            port,
            dir,
        };
        process
            .wait_ready(Duration::from_secs(30), || me.curl(&["/-/ready"]).is_some())
            .unwrap();
        me._process = Some(process);
        me
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// curl with the right credentials and CA: `args` then the URL of the last one (a path);
    /// `None` unless 2xx.
    fn curl(&self, args: &[&str]) -> Option<String> {
        let (path, flags) = args.split_last()?;
        let out = Command::new("curl")
            .args(["-s", "-f", "-u", &format!("{USER}:{PASSWORD}")])
            .args(["--cacert", &self.file("ca.pem")])
            .args(flags)
            .arg(format!("{}{path}", self.url()))
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// PUTs a one-counter group `{job, instance}`.
    fn put(&self, job: &str, instance: &str) {
        let path = format!("/metrics/job/{job}/instance/{instance}");
        self.curl(&[
            "-X",
            "PUT",
            "--data-binary",
            "some_counter_total 1\n",
            &path,
        ])
        .unwrap_or_else(|| panic!("PUT {path}"));
    }

    /// The `/metrics` text (every group).
    fn metrics(&self) -> String {
        self.curl(&["/metrics"]).unwrap_or_default()
    }

    /// Whether a group with `job` and `instance` is stored.
    fn has_group(&self, job: &str, instance: &str) -> bool {
        self.metrics().lines().any(|l| {
            l.starts_with("push_time_seconds{")
                && l.contains(&format!("job=\"{job}\""))
                && l.contains(&format!("instance=\"{instance}\""))
        })
    }
}

impl Drop for SecurePushgateway {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A collector pushing to `pgw` as `instance` with `auth` flags, its janitor pruning
/// `prune_job` groups older than 1 s every second.
fn collector(tansu: &Tansu, pgw: &SecurePushgateway, instance: &str, auth: &[&str]) -> Collector {
    let mut args: Vec<String> = [
        "--brokers",
        &tansu.bootstrap(),
        "--group-id",
        &format!("tls-{instance}"),
        "--pushgateway-url",
        &pgw.url(),
        "--push-interval",
        "500ms",
        "--instance",
        instance,
        "--prune-job",
        "tls_sdk",
        "--prune-after",
        "1s",
        "--prune-interval",
        "1s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(auth.iter().map(|s| s.to_string()));
    Collector::start(&args)
}

/// `whisk_collector_pushes_total` and `whisk_collector_janitor_runs_total` by result, once
/// `/metrics` answers.
fn counts(c: &Collector) -> Option<[f64; 4]> {
    let text = c.metrics();
    let get = |s: &str| sample(&text, s);
    Some([
        get(r#"whisk_collector_pushes_total{result="ok"}"#)?,
        get(r#"whisk_collector_pushes_total{result="failed"}"#)?,
        get(r#"whisk_collector_janitor_runs_total{result="ok"}"#)?,
        get(r#"whisk_collector_janitor_runs_total{result="failed"}"#)?,
    ])
}

#[test]
fn with_the_right_ca_and_password_the_push_and_the_janitor_work_over_tls_and_basic_auth() {
    let tansu = Tansu::start().unwrap();
    tansu.create_topic("events", 1).unwrap();
    produce(
        &tansu.bootstrap(),
        "events",
        0,
        &[Some(activation(
            "guest",
            "guest/hello",
            r#","statusCode":0"#,
        ))],
    );
    let pgw = SecurePushgateway::start();
    pgw.put("tls_sdk", "stale");
    let ca = pgw.file("ca.pem");
    let password = pgw.file("password");
    let mut c = collector(
        &tansu,
        &pgw,
        "good",
        &[
            "--pushgateway-ca-file",
            &ca,
            "--pushgateway-username",
            USER,
            "--pushgateway-password-file",
            &password,
        ],
    );
    let pushed = wait_for(LONG, || {
        let text = pgw.metrics();
        sample(
            &text,
            r#"openwhisk_action_activations_total{action="hello",initiator="guest",instance="good",job="openwhisk_platform",kind="nodejs:20",memory="256",namespace="guest"}"#,
        )
    });
    assert_eq!(pushed, Some(1.0), "{}\n{}", pgw.metrics(), c.log());
    assert!(
        wait_for(LONG, || (!pgw.has_group("tls_sdk", "stale")).then_some(())).is_some(),
        "the janitor did not prune the stale group: {}",
        c.log()
    );
    let [ok, _, janitor_ok, _] = wait_for(LONG, || counts(&c)).unwrap();
    assert!(ok >= 1.0 && janitor_ok >= 1.0, "{}", c.metrics());
    assert!(c.terminate(LONG).is_some_and(|s| s.success()));
}

#[test]
fn a_wrong_password_or_an_unknown_ca_fails_every_push_and_round_counted_and_logged() {
    let tansu = Tansu::start().unwrap();
    tansu.create_topic("events", 1).unwrap();
    let pgw = SecurePushgateway::start();
    pgw.put("tls_sdk", "stale");
    let ca = pgw.file("ca.pem");
    let other_ca = pgw.file("other-ca.pem");
    let password = pgw.file("password");
    let cases: [(&str, Vec<&str>, &str); 2] = [
        (
            "wrong-password",
            vec![
                "--pushgateway-ca-file",
                &ca,
                "--pushgateway-username",
                USER,
                "--pushgateway-password",
                "wrong",
            ],
            "401",
        ),
        (
            "unknown-ca",
            vec![
                "--pushgateway-ca-file",
                &other_ca,
                "--pushgateway-username",
                USER,
                "--pushgateway-password-file",
                &password,
            ],
            "push failed",
        ),
    ];
    for (instance, auth, logged) in cases {
        let mut c = collector(&tansu, &pgw, instance, &auth);
        let failed = wait_for(LONG, || {
            counts(&c).filter(|[_, pushes_failed, _, janitor_failed]| {
                *pushes_failed >= 2.0 && *janitor_failed >= 1.0
            })
        });
        let [ok, _, janitor_ok, _] =
            failed.unwrap_or_else(|| panic!("{instance}: failures not counted: {}", c.metrics()));
        assert_eq!((ok, janitor_ok), (0.0, 0.0), "{instance}");
        let log = c.log();
        assert!(
            log.contains("push failed") && log.contains(logged),
            "{instance}: {log}"
        );
        assert!(log.contains("janitor"), "{instance}: {log}");
        assert!(
            c.child.try_wait().unwrap().is_none(),
            "{instance}: the collector exited"
        );
        assert!(!pgw.has_group("openwhisk_platform", instance), "{instance}");
        assert!(
            pgw.has_group("tls_sdk", "stale"),
            "{instance}: nothing may be deleted"
        );
        assert!(
            c.terminate(LONG).is_some(),
            "{instance}: no exit after SIGTERM"
        );
    }
}
