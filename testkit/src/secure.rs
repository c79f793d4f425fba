//! A Pushgateway behind `--web.config.file` (the exporter-toolkit format): basic auth with one
//! bcrypt user and, with `tls`, HTTPS with a server certificate for 127.0.0.1 signed by a CA
//! made here by the `openssl` CLI.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::process::{ServiceProcess, free_port};
use crate::{Error, Result};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// bcrypt cost of the user's hash: the lowest, since the Pushgateway checks it on every request
/// and the default cost takes longer than a push timeout on a loaded machine.
const BCRYPT_COST: u32 = 4;

/// A Pushgateway with basic auth (and TLS when asked) on a free loopback port. Its directory
/// holds `ca.pem` (the CA that signed the server's certificate), `other-ca.pem` (a CA that
/// signed nothing) and `password` (the password and a newline), see [`SecurePushgateway::file`].
#[derive(Debug)]
pub struct SecurePushgateway {
    process: ServiceProcess,
    port: u16,
    tls: bool,
    user: String,
    password: String,
}

impl SecurePushgateway {
    /// Starts one accepting only `user`:`password`, over HTTPS when `tls`, and waits until it
    /// answers `/-/ready` with those credentials.
    pub fn start(user: &str, password: &str, tls: bool) -> Result<Self> {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "whisk-testkit-secure-pushgateway-{}-{port}",
            std::process::id()
        ));
        let hash = bcrypt::hash(password, BCRYPT_COST).map_err(|e| Error::Command {
            command: "bcrypt".to_string(),
            output: e.to_string(),
        })?;
        let mut config = format!("basic_auth_users:\n  {user}: '{hash}'\n");
        if tls {
            make_certs(&dir)?;
            config.push_str(&format!(
                "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
                dir.join("server.pem").display(),
                dir.join("server.key").display()
            ));
        }
        write(&dir.join("web.yml"), &config)?;
        write(&dir.join("password"), &format!("{password}\n"))?;
        let args = vec![
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--persistence.file=".to_string(),
            format!("--web.config.file={}", dir.join("web.yml").display()),
        ];
        let process = ServiceProcess::spawn_in(
            "pushgateway-secure",
            "prometheus-pushgateway",
            &args,
            "apt-get install -y prometheus-pushgateway",
            &dir,
        )?;
        let mut me = Self {
            process,
            port,
            tls,
            user: user.to_string(),
            password: password.to_string(),
        };
        let ready = |me: &Self| me.get("/-/ready").is_some();
        if !crate::process::wait_until(READY_TIMEOUT, || ready(&me)) {
            me.process.kill();
            return Err(Error::NotReady {
                service: "pushgateway-secure".to_string(),
                secs: READY_TIMEOUT.as_secs(),
                log: me.process.log_tail(),
            });
        }
        Ok(me)
    }

    /// Base URL, `https://…` with TLS, else `http://…`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The path of one of its files (`ca.pem`, `other-ca.pem`, `password`).
    pub fn file(&self, name: &str) -> String {
        self.process.dir().join(name).display().to_string()
    }

    /// `curl` with the right credentials (and CA): `args`, then the URL of the last one (a
    /// path). The answer's body, or `None` unless 2xx.
    pub fn curl(&self, args: &[&str]) -> Option<String> {
        let (path, flags) = args.split_last()?;
        let mut cmd = Command::new("curl");
        cmd.args([
            "-s",
            "-f",
            "-u",
            &format!("{}:{}", self.user, self.password),
        ]);
        if self.tls {
            cmd.args(["--cacert", &self.file("ca.pem")]);
        }
        let out = cmd
            .args(flags)
            .arg(format!("{}{path}", self.url()))
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// GET `path` with the right credentials (and CA); `None` unless 2xx.
    pub fn get(&self, path: &str) -> Option<String> {
        self.curl(&[path])
    }
}

impl Drop for SecurePushgateway {
    fn drop(&mut self) {
        self.process.kill();
        let _ = std::fs::remove_dir_all(self.process.dir());
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
    }
    std::fs::write(path, text).map_err(|source| Error::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}

/// A CA, a server certificate for 127.0.0.1 signed by it (rustls refuses a self-signed CA
/// certificate as the server's own), and a second CA that signed nothing.
fn make_certs(dir: &Path) -> Result<()> {
    write(
        &dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )?;
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    for step in [
        format!("req -x509 {ec} -keyout ca.key -out ca.pem -days 2 -subj /CN=whisk-test-ca"),
        format!("req {ec} -keyout server.key -out server.csr -subj /CN=127.0.0.1"),
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
         -days 2 -extfile ext.cnf"
            .to_string(),
        format!(
            "req -x509 {ec} -keyout other.key -out other-ca.pem -days 2 -subj /CN=some-other-ca"
        ),
    ] {
        openssl(dir, &step)?;
    }
    Ok(())
}

fn openssl(dir: &Path, args: &str) -> Result<()> {
    let command = format!("openssl {args}");
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args.split_whitespace())
        .output()
        .map_err(|source| Error::Io {
            what: command.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Command {
            command,
            output: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}
