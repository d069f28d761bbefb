//! A real `redis-server` on a free loopback port, killed with its process group on drop.
//!
//! ```text
//! let mut redis = RedisServer::start();            // in memory, like a cache
//! let mut redis = RedisServer::start_persistent(); // AOF fsync'd on every write
//! let redis = RedisServer::start_on(Transport::Tls); // rediss:// with a CA made for it
//! redis.stop(); redis.restart();                   // same port (and data, if persistent)
//! let kv = RedisKeyValue::connect(redis.client_config()); // URL and CA file, either way
//! ```
//!
//! Over TLS the server listens only on its TLS port, with a certificate for 127.0.0.1 and
//! localhost signed by a CA that [`TlsFiles::generate`] makes with the `openssl` command.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ledgerhost_capabilities::keyvalue::redis::RedisConfig;

use super::{ProcessGroup, free_port, wait_for_port};

const INSTALL: &str = "apt-get install -y redis-server (or run scripts/install-test-deps)";
const INSTALL_OPENSSL: &str = "apt-get install -y openssl (or run scripts/install-test-deps)";

/// How clients reach the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Transport {
    /// `redis://`.
    #[default]
    Plain,
    /// `rediss://`: TLS only, the plaintext port closed.
    Tls,
}

/// How to start a [`RedisServer`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RedisOptions {
    pub transport: Transport,
    /// Append-only file fsync'd on every write (data survives a restart).
    pub persistent: bool,
    /// Over TLS: refuse clients without a certificate signed by the server's CA.
    pub require_client_certs: bool,
}

/// PEM files of a test CA, a server certificate it signed (for 127.0.0.1 and localhost) and
/// a client certificate it signed.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("the openssl command is missing ({e}): {INSTALL_OPENSSL}"));
    assert!(
        out.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TlsFiles {
    /// Makes a new CA and certificates in `dir` with the `openssl` command (P-256 keys,
    /// valid for two days).
    pub fn generate(dir: &Path) -> TlsFiles {
        std::fs::create_dir_all(dir).expect("certificate directory");
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=ledgerhost test CA",
        ]);
        openssl(dir, &ca);
        for (name, cn, ext) in [
            (
                "server",
                "/CN=127.0.0.1",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
                 keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
            ),
            (
                "client",
                "/CN=ledgerhost test client",
                "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
                 extendedKeyUsage=clientAuth\n",
            ),
        ] {
            let (key, csr, pem, extfile) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{name}.ext"),
            );
            std::fs::write(dir.join(&extfile), ext).expect("extension file");
            let mut req = vec!["req"];
            req.extend(ec);
            req.extend(["-keyout", &key, "-out", &csr, "-subj", cn]);
            openssl(dir, &req);
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &pem,
                    "-days",
                    "2",
                    "-extfile",
                    &extfile,
                ],
            );
        }
        TlsFiles {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }
}

/// A running (or stopped, restartable) Redis server.
pub struct RedisServer {
    group: Option<ProcessGroup>,
    /// The loopback port it listens on (kept across restarts): the TLS port over TLS.
    pub port: u16,
    dir: tempfile::TempDir,
    options: RedisOptions,
    /// The certificates, over TLS.
    pub tls: Option<TlsFiles>,
}

fn binary() -> PathBuf {
    let path =
        std::env::var_os("REDIS_SERVER").map_or_else(|| "redis-server".into(), PathBuf::from);
    match Command::new(&path).arg("--version").output() {
        Ok(o) if o.status.success() => path,
        Ok(o) => panic!(
            "`{} --version` failed ({}): reinstall with {INSTALL}",
            path.display(),
            o.status
        ),
        Err(e) => panic!("redis-server is missing ({e}): {INSTALL}"),
    }
}

impl RedisServer {
    /// Starts Redis without persistence (`--save "" --appendonly no`).
    pub fn start() -> Self {
        Self::start_with(RedisOptions::default())
    }

    /// Starts Redis without persistence, reached over `transport`.
    pub fn start_on(transport: Transport) -> Self {
        Self::start_with(RedisOptions {
            transport,
            ..RedisOptions::default()
        })
    }

    /// Starts Redis with an append-only file fsync'd on every write in a temporary
    /// directory, so its data survives [`Self::stop`] + [`Self::restart`] as Memorystore's
    /// does across a failover.
    pub fn start_persistent() -> Self {
        Self::start_with(RedisOptions {
            persistent: true,
            ..RedisOptions::default()
        })
    }

    /// As [`Self::start_persistent`], reached over `transport`.
    pub fn start_persistent_on(transport: Transport) -> Self {
        Self::start_with(RedisOptions {
            transport,
            persistent: true,
            ..RedisOptions::default()
        })
    }

    /// Starts Redis as `options` say; over TLS, with certificates made for it.
    pub fn start_with(options: RedisOptions) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory for redis");
        let tls = (options.transport == Transport::Tls)
            .then(|| TlsFiles::generate(&dir.path().join("tls")));
        let mut server = RedisServer {
            group: None,
            port: free_port(),
            dir,
            options,
            tls,
        };
        server.restart();
        server
    }

    /// `redis://127.0.0.1:PORT`, or `rediss://127.0.0.1:PORT` over TLS.
    pub fn url(&self) -> String {
        match self.options.transport {
            Transport::Plain => format!("redis://127.0.0.1:{}", self.port),
            Transport::Tls => format!("rediss://127.0.0.1:{}", self.port),
        }
    }

    /// A client configuration that reaches this server: its URL and, over TLS, its CA (and
    /// the client certificate when the server requires one).
    pub fn client_config(&self) -> RedisConfig {
        let mut config = RedisConfig::new(self.url());
        if let Some(tls) = &self.tls {
            config.tls.ca_file = Some(tls.ca.clone());
            if self.options.require_client_certs {
                config.tls.client_cert_file = Some(tls.client_cert.clone());
                config.tls.client_key_file = Some(tls.client_key.clone());
            }
        }
        config
    }

    /// The host config's `[keyvalue]` section for this server (kind, url, TLS files).
    pub fn keyvalue_toml(&self) -> String {
        let mut text = format!("[keyvalue]\nkind = \"redis\"\nurl = \"{}\"\n", self.url());
        let config = self.client_config();
        for (key, file) in [
            ("tls-ca-file", &config.tls.ca_file),
            ("tls-cert-file", &config.tls.client_cert_file),
            ("tls-key-file", &config.tls.client_key_file),
        ] {
            if let Some(f) = file {
                text.push_str(&format!("{key} = {:?}\n", f.display().to_string()));
            }
        }
        text
    }

    /// Kills the server (SIGKILL: no shutdown save, as a crash).
    pub fn stop(&mut self) {
        if let Some(mut g) = self.group.take() {
            g.kill();
        }
    }

    /// Starts the server again on the same port; waits until it accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        let mut cmd = Command::new(binary());
        cmd.current_dir(self.dir.path());
        match &self.tls {
            None => {
                cmd.args(["--port", &self.port.to_string()]);
            }
            Some(tls) => {
                let auth = if self.options.require_client_certs {
                    "yes"
                } else {
                    "no"
                };
                cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(&tls.server_cert)
                    .arg("--tls-key-file")
                    .arg(&tls.server_key)
                    .arg("--tls-ca-cert-file")
                    .arg(&tls.ca)
                    .args(["--tls-auth-clients", auth]);
            }
        }
        cmd.args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path());
        if self.options.persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        // Redis logs to stdout; kept (appended across restarts) for the failure message.
        let log_path = self.dir.path().join("redis.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("redis log file");
        cmd.stdout(log).stderr(Stdio::null());
        let group = ProcessGroup::spawn(&format!("redis-server :{}", self.port), cmd)
            .unwrap_or_else(|e| panic!("cannot start redis-server ({e}): {INSTALL}"));
        self.group = Some(group);
        assert!(
            wait_for_port(self.port, Duration::from_secs(20)),
            "redis-server did not listen on 127.0.0.1:{} within 20 s ({:?}; a TLS server needs \
             a redis-server built with TLS, as Debian's is). Its log:\n{}",
            self.port,
            self.options,
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
