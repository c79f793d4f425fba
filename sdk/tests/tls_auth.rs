//! The SDK against a real Pushgateway started with `--web.config.file`: basic auth (a bcrypt
//! user, from the activation's API key with `WHISK_METRICS_AUTH=api-key` or from fixed
//! credentials) and, with the `tls` feature, HTTPS with a CA and certificate generated here by
//! the `openssl` CLI. Right credentials and CA push; wrong ones fail and are counted, and the
//! count arrives with the next push that succeeds. The TLS test runs with
//! `cargo test -p whisk-metrics --features tls` (which also builds the probe example with TLS;
//! `--test tls_auth` alone reuses whatever probe example was built last).
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Action, example_exe};
use serde_json::json;
use whisk_testkit::{ServiceProcess, free_port, wait_until};

const LONG: Duration = Duration::from_secs(60);
/// The Pushgateway's user: the `uuid` half of the API key `user:key` the test driver sends.
const USER: &str = "user";
const PASSWORD: &str = "key";

/// A Pushgateway with basic auth (and TLS when `tls` is set) on a free loopback port.
struct SecurePushgateway {
    _process: Option<ServiceProcess>,
    port: u16,
    tls: bool,
    dir: PathBuf,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it (rustls refuses a self-signed CA
/// certificate as the server's own).
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
        .args(["-subj", "/CN=whisk-test-ca"]));
    run(Command::new("openssl")
        .current_dir(dir)
        .arg("req")
        .args(ec)
        .args([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]));
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(Command::new("openssl")
        .current_dir(dir)
        .args([
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
        ])
        .args([
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]));
    // a second CA that did not sign the server's certificate
    run(Command::new("openssl")
        .current_dir(dir)
        .args(["req", "-x509"])
        .args(ec)
        .args(["-keyout", "other.key", "-out", "other-ca.pem", "-days", "2"])
        .args(["-subj", "/CN=some-other-ca"]));
}

/// bcrypt of `password` at the lowest cost (4; the Pushgateway checks it on every request, and
/// the default cost takes longer than a push timeout on a loaded machine).
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

impl SecurePushgateway {
    fn start(tls: bool) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "whisk-sdk-tls-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut config = format!("basic_auth_users:\n  {USER}: '{}'\n", bcrypt(PASSWORD));
        if tls {
            make_certs(&dir);
            config.push_str(&format!(
                "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
                dir.join("server.pem").display(),
                dir.join("server.key").display()
            ));
        }
        std::fs::write(dir.join("web.yml"), config).unwrap();
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
            tls,
            dir,
        };
        process
            .wait_ready(Duration::from_secs(30), || me.get("/-/ready").is_some())
            .unwrap();
        me._process = Some(process);
        me
    }

    fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// GET with the right credentials (and CA); `None` unless 200.
    fn get(&self, path: &str) -> Option<String> {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-f", "-u", &format!("{USER}:{PASSWORD}")]);
        if self.tls {
            cmd.arg("--cacert").arg(self.dir.join("ca.pem"));
        }
        let out = cmd.arg(format!("{}{path}", self.url())).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// Sum of the samples of `name` with all of `want` among their labels.
    fn sum(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        let text = self.get("/metrics")?;
        let mut found = None;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let base = series.split('{').next().unwrap_or(series);
            if base == name
                && want
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
            {
                *found.get_or_insert(0.0) += value.parse::<f64>().unwrap_or(f64::NAN);
            }
        }
        found
    }
}

impl Drop for SecurePushgateway {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The probe action with `env` and a push timeout generous enough for a loaded machine.
fn probe(env: &[(&str, &str)]) -> Action {
    let mut env = env.to_vec();
    env.push(("WHISK_METRICS_TIMEOUT_MS", "3000"));
    Action::spawn(&example_exe("probe_action"), "/guest/pkg/probe", &env)
}

/// Invokes `action` until its `probe_calls_total{mode="ok"}` in `pgw` equals the number of
/// invocations (pushes may be backing off after failures), bounded.
fn invoke_until_pushed(pgw: &SecurePushgateway, action: &mut Action, mut invoked: f64) -> bool {
    wait_until(Duration::from_secs(20), || {
        action.invoke(json!({"mode": "ok"}), LONG);
        invoked += 1.0;
        std::thread::sleep(Duration::from_millis(100));
        pgw.sum("probe_calls_total", &[("mode", "ok")]) == Some(invoked)
    })
}

#[test]
fn api_key_basic_auth_pushes_with_the_right_key_and_counts_unauthorized_with_a_wrong_one() {
    let pgw = SecurePushgateway::start(false);
    let url = pgw.url();
    let env = [
        ("WHISK_METRICS_PUSHGATEWAY_URL", url.as_str()),
        ("WHISK_METRICS_AUTH", "api-key"),
    ];
    let mut action = probe(&env);
    // a wrong key first: 401, counted
    action.api_key = "user:wrong".to_string();
    action.invoke(json!({"mode": "ok"}), LONG);
    action.invoke(json!({"mode": "ok"}), LONG);
    let stderr = action.stderr();
    assert!(
        stderr.contains("failed (unauthorized): the Pushgateway answered 401"),
        "{stderr}"
    );
    // the key of the next activations is right: the next push carries everything
    action.api_key = format!("{USER}:{PASSWORD}");
    assert!(invoke_until_pushed(&pgw, &mut action, 2.0));
    assert!(
        pgw.sum("whisk_push_failures_total", &[("reason", "unauthorized")])
            .is_some_and(|f| f >= 1.0)
    );
    // without credentials the Pushgateway refuses the read too: auth is really on
    let anonymous = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{url}/metrics"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&anonymous.stdout), "401");
}

#[cfg(feature = "tls")]
#[test]
fn tls_with_the_right_ca_and_credentials_pushes_and_wrong_ones_fail_counted() {
    let pgw = SecurePushgateway::start(true);
    let url = pgw.url();
    let ca = pgw.dir.join("ca.pem").display().to_string();
    let other_ca = pgw.dir.join("other-ca.pem").display().to_string();
    // wrong CA: the TLS handshake fails (transport), nothing stored
    let mut action = probe(&[
        ("WHISK_METRICS_PUSHGATEWAY_URL", url.as_str()),
        ("WHISK_METRICS_USERNAME", USER),
        ("WHISK_METRICS_PASSWORD", PASSWORD),
        ("WHISK_METRICS_CA_FILE", other_ca.as_str()),
    ]);
    action.invoke(json!({"mode": "ok"}), LONG);
    action.invoke(json!({"mode": "ok"}), LONG);
    assert!(
        action.stderr().contains("failed (transport)"),
        "{}",
        action.stderr()
    );
    assert_eq!(pgw.sum("probe_calls_total", &[]), None);
    drop(action);
    // right CA, wrong password: 401, counted, then right credentials carry the count
    let mut action = probe(&[
        ("WHISK_METRICS_PUSHGATEWAY_URL", url.as_str()),
        ("WHISK_METRICS_AUTH", "api-key"),
        ("WHISK_METRICS_CA_FILE", ca.as_str()),
    ]);
    action.api_key = "user:wrong".to_string();
    action.invoke(json!({"mode": "ok"}), LONG);
    action.invoke(json!({"mode": "ok"}), LONG);
    assert!(
        action.stderr().contains("failed (unauthorized)"),
        "{}",
        action.stderr()
    );
    action.api_key = format!("{USER}:{PASSWORD}");
    assert!(invoke_until_pushed(&pgw, &mut action, 2.0));
    assert!(
        pgw.sum("whisk_push_failures_total", &[("reason", "unauthorized")])
            .is_some_and(|f| f >= 1.0)
    );
    // and fixed credentials over TLS work as well
    let mut fixed = probe(&[
        ("WHISK_METRICS_PUSHGATEWAY_URL", url.as_str()),
        ("WHISK_METRICS_USERNAME", USER),
        ("WHISK_METRICS_PASSWORD", PASSWORD),
        ("WHISK_METRICS_CA_FILE", ca.as_str()),
    ]);
    fixed.invoke(json!({"mode": "ok"}), LONG);
    assert!(wait_until(Duration::from_secs(10), || {
        pgw.sum("whisk_activations_total", &[("status", "success")])
            .is_some_and(|n| n >= 4.0)
    }));
}
