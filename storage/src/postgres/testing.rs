//! [`PrivateServer`]: a PostgreSQL server of a test's own (feature `postgres-testing`).
//!
//! Tests never use a shared database: each starts Debian's `postgres` from `initdb` in a
//! temporary directory on a free loopback port, with password authentication over TCP,
//! and stops it when dropped. `initdb` and `postgres` refuse to run as root, so under root
//! both run as the `postgres` user (or `nobody`), which then owns the directory. A test can
//! stop and restart the server, or hang every one of its processes (SIGSTOP) and resume them.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Password, PostgresOptions};

/// The database user of a private server.
pub const USER: &str = "stockgrid";

/// A private PostgreSQL server; stopped and removed when dropped.
#[derive(Debug)]
pub struct PrivateServer {
    directory: tempfile::TempDir,
    binaries: PathBuf,
    /// An address it listens on besides 127.0.0.1.
    also_on: Option<std::net::Ipv4Addr>,
    port: u16,
    password: String,
    owner: Option<(u32, u32)>,
    server: Option<Child>,
    paused: bool,
}

/// The directory of PostgreSQL's server programs: `STOCKGRID_POSTGRES_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian's layout).
fn binaries() -> PathBuf {
    if let Ok(dir) = std::env::var("STOCKGRID_POSTGRES_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL's server programs were not found under /usr/lib/postgresql: run the \
             README's test command (scripts/test.sh), which installs Debian's postgresql, or \
             set STOCKGRID_POSTGRES_BIN to the directory holding initdb and postgres"
        ),
    }
}

/// The uid and gid to run the server as when this process is root: `postgres`, else `nobody`.
fn unprivileged_owner() -> Option<(u32, u32)> {
    if !rustix::process::getuid().is_root() {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let find = |name: &str| {
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.len() > 3 && fields[0] == name)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
    };
    Some(
        find("postgres")
            .or_else(|| find("nobody"))
            .unwrap_or((65534, 65534)),
    )
}

/// The processes whose parent is `parent`, from /proc.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // "pid (comm) state ppid ...": the command may hold spaces and parentheses.
            let after_command = &stat[stat.rfind(')')? + 1..];
            let ppid: u32 = after_command.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == parent).then_some(pid)
        })
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

impl PrivateServer {
    /// Initialises and starts a server; panics with the server's log when it cannot.
    pub fn start() -> Self {
        Self::start_listening(None)
    }

    /// As [`PrivateServer::start`], listening also on `address` (which must be one of this
    /// machine's, e.g. the host end of a test's veth pair) and admitting clients of its /24.
    pub fn start_also_on(address: std::net::Ipv4Addr) -> Self {
        Self::start_listening(Some(address))
    }

    fn start_listening(also_on: Option<std::net::Ipv4Addr>) -> Self {
        let directory = tempfile::Builder::new()
            .prefix("stockgrid-pg-")
            .tempdir()
            .expect("a temporary directory for PostgreSQL");
        let owner = unprivileged_owner();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(directory.path(), Some(uid), Some(gid))
                .expect("give the server's directory to its unprivileged user");
        }
        let password = format!("pw-{:x}", crate::random_salt());
        let password_file = directory.path().join("password");
        std::fs::write(&password_file, &password).expect("write the password file");
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&password_file, Some(uid), Some(gid))
                .expect("give the password file to the server's user");
        }
        let mut server = Self {
            binaries: binaries(),
            also_on,
            port: 0,
            password,
            owner,
            server: None,
            paused: false,
            directory,
        };
        let initdb = server
            .command("initdb")
            .arg("-D")
            .arg(server.data())
            .args([
                "-U",
                USER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", password_file.display()))
            .args(["--no-sync", "-E", "UTF8", "--locale=C"])
            .output()
            .expect("run initdb");
        assert!(
            initdb.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        if let Some(address) = also_on {
            let [a, b, c, _] = address.octets();
            let mut hba = std::fs::OpenOptions::new()
                .append(true)
                .open(server.data().join("pg_hba.conf"))
                .expect("open pg_hba.conf");
            std::io::Write::write_all(
                &mut hba,
                format!("host all all {a}.{b}.{c}.0/24 scram-sha-256\n").as_bytes(),
            )
            .expect("admit the extra network");
        }
        server.port = free_port();
        server.launch();
        server
    }

    fn data(&self) -> PathBuf {
        self.directory.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.directory.path().join("server.log")
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.binaries.join(program));
        command
            .current_dir(self.directory.path())
            .env("PGPASSWORD", &self.password)
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.owner {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(gid);
        }
        command
    }

    fn launch(&mut self) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.log())
            .expect("open the server log");
        let child = {
            self.command("postgres")
                .arg("-D")
                .arg(self.data())
                .args(["-p", &self.port.to_string()])
                .arg("-k")
                .arg(self.directory.path())
                .args([
                    "-c",
                    &match self.also_on {
                        None => "listen_addresses=127.0.0.1".to_owned(),
                        Some(address) => format!("listen_addresses=127.0.0.1,{address}"),
                    },
                    "-c",
                    "shared_buffers=32MB",
                    "-c",
                    "max_connections=60",
                ])
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("start postgres")
        };
        self.server = Some(child);
        self.paused = false;
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if let Some(child) = self.server.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "postgres exited ({status}) while starting: {}",
                    self.log_tail()
                );
            }
            let accepting = TcpStream::connect_timeout(&address, Duration::from_millis(200))
                .is_ok()
                && self
                    .command("pg_isready")
                    .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                    .status()
                    .is_ok_and(|status| status.success());
            if accepting {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not accept connections within 60 s: {}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A client program of the server's own version (`psql`, `pgbench`), with the
    /// password in its environment.
    pub fn program(&self, name: &str) -> Command {
        let mut command = Command::new(self.binaries.join(name));
        command.env("PGPASSWORD", &self.password);
        command
    }

    /// The last lines the server logged (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The URL of `database` at the extra address it listens on (see
    /// [`PrivateServer::start_also_on`]).
    pub fn url_at(&self, address: std::net::Ipv4Addr, database: &str) -> String {
        format!("postgres://{USER}@{address}:{}/{database}", self.port)
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The password of [`USER`] (tests hand it over as `PGPASSWORD` or a file).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A URL of `database` on this server, without the password.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates `database` (letters, digits and '_').
    pub fn create_database(&self, database: &str) {
        let output = self
            .command("createdb")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
            .arg(database)
            .output()
            .expect("run createdb");
        assert!(
            output.status.success(),
            "createdb {database}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Store options for `database` and `schema` on this server, with short timeouts (1 s
    /// for an operation, 500 ms for a lock) so that outage tests finish quickly.
    pub fn options(&self, database: &str, schema: &str) -> PostgresOptions {
        let mut options =
            PostgresOptions::from_url(&self.url(database), Password::Given(self.password.clone()))
                .expect("a valid URL");
        options.schema = schema.to_owned();
        options.operation_timeout = Duration::from_secs(1);
        options.lock_timeout = Duration::from_millis(500);
        options
    }

    /// Writes the password to a file readable only by this process's user and returns it.
    pub fn password_file(&self, directory: &Path) -> PathBuf {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = directory.join("pg-password");
        let mut file = std::fs::File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .expect("create the password file");
        writeln!(file, "{}", self.password).expect("write the password file");
        path
    }

    /// Sends `signal` to the postmaster, then to every process it started. (Each of them
    /// is a session leader of its own, so one signal to the process group reaches the
    /// postmaster alone.)
    fn signal_all(&self, signal: rustix::process::Signal) {
        let Some(child) = &self.server else {
            return;
        };
        let postmaster = child.id();
        let send = |pid: u32| {
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, signal);
            }
        };
        send(postmaster);
        for pid in children_of(postmaster) {
            send(pid);
        }
    }

    /// Hangs every process of the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&mut self) {
        self.signal_all(rustix::process::Signal::STOP);
        self.paused = true;
    }

    /// Resumes a paused server.
    pub fn resume(&mut self) {
        self.signal_all(rustix::process::Signal::CONT);
        self.paused = false;
    }

    /// Stops the server (fast shutdown: open transactions roll back) and waits for it.
    pub fn stop(&mut self) {
        if self.paused {
            self.resume();
        }
        if let Some(mut child) = self.server.take() {
            if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
            }
            let _ = child.wait();
        }
    }

    /// Starts a stopped server again, on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.stop();
    }
}
