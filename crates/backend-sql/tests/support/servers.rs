//! Database servers of one test's own, for the tests that stop and start a server: PostgreSQL
//! (`initdb` + `postgres`) and MariaDB (`mariadb-install-db` + `mariadbd`), each on a free port
//! in a temporary directory, never the shared server other tests use.
//!
//! Start-up is kept short (about half a second each here): no fsync, small buffers, no binary
//! log. Stopping makes the port refuse connections; starting again reuses the port and the data
//! directory, so stored rows survive a restart. Dropping the server kills its processes (also
//! when the test panicked) and removes the directory.
//!
//! [`PrivateServer`] is also the [`Outage`] the conformance suite's outage checks stop and
//! start.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cachier_core::Core;
use cachier_core::conformance::Outage;
use cachier_sql::{Config, SqlCore};

const POSTGRES_PACKAGE: &str = "apt-get install -y postgresql";
const MARIADB_PACKAGE: &str = "apt-get install -y mariadb-server";
/// How long a (re)started server may take to accept a session.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after being asked to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Which server a [`PrivateServer`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    Mariadb,
}

/// A private database server, stopped and removed when dropped.
pub struct PrivateServer {
    kind: Kind,
    port: u16,
    /// The user and group the server runs as (`postgres` when PostgreSQL is started by root).
    run_as: Option<(u32, u32)>,
    child: Mutex<Option<Child>>,
    /// Dropped after `Drop::drop` has killed the server: removes the data directory.
    dir: tempfile::TempDir,
}

impl PrivateServer {
    /// A fresh PostgreSQL cluster, started; panics with what to install when it cannot start.
    pub fn postgres() -> Self {
        Self::create(Kind::Postgres)
    }

    /// A fresh MariaDB server with a `test` database, started; panics with what to install when
    /// it cannot start.
    pub fn mariadb() -> Self {
        Self::create(Kind::Mariadb)
    }

    fn create(kind: Kind) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(match kind {
                Kind::Postgres => "cachier-sql-pg-",
                Kind::Mariadb => "cachier-sql-maria-",
            })
            .tempdir()
            .expect("a temporary directory for a private database server");
        // PostgreSQL refuses to run as root: it then runs as the `postgres` user, which must
        // own its directory.
        let run_as = (kind == Kind::Postgres && running_as_root()).then(|| {
            let ids = user_ids("postgres").unwrap_or_else(|| {
                panic!(
                    "PostgreSQL refuses to run as root and there is no `postgres` user to run it \
                     as ({POSTGRES_PACKAGE} creates one)"
                )
            });
            std::os::unix::fs::chown(dir.path(), Some(ids.0), Some(ids.1))
                .expect("the temporary directory can be handed to the postgres user");
            ids
        });
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free local port")
            .port();
        let server = PrivateServer {
            kind,
            port,
            run_as,
            child: Mutex::new(None),
            dir,
        };
        match kind {
            Kind::Postgres => server.init_postgres(),
            Kind::Mariadb => server.init_mariadb(),
        }
        server.start_blocking();
        server
    }

    /// The URL of the server's database (`postgres` on PostgreSQL, `test` on MariaDB).
    pub fn url(&self) -> String {
        match self.kind {
            Kind::Postgres => format!("postgres://postgres@127.0.0.1:{}/postgres", self.port),
            Kind::Mariadb => format!("mysql://root@127.0.0.1:{}/test", self.port),
        }
    }

    /// The port, which refuses connections while the server is stopped.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory's parent, removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        // A panic while the lock was held leaves nothing half-done that matters here.
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A command for `program` that runs as the server's user.
    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        if let Some((uid, gid)) = self.run_as {
            // std drops root's supplementary groups when it changes the user id.
            command.uid(uid).gid(gid);
        }
        command.current_dir(self.dir.path()).stdin(Stdio::null());
        command
    }

    fn init_postgres(&self) {
        let initdb = postgres_binary("initdb");
        let out = self
            .command(&initdb)
            .arg("-D")
            .arg(self.data())
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", initdb.display()));
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn init_mariadb(&self) {
        let install = which("mariadb-install-db", &[])
            .or_else(|| which("mysql_install_db", &[]))
            .unwrap_or_else(|| {
                panic!("this test starts its own MariaDB and found no mariadb-install-db: {MARIADB_PACKAGE}")
            });
        let tmp = self.dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).expect("a private temporary directory for MariaDB");
        let out = self
            .command(&install)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.data().display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg("--auth-root-authentication-method=normal")
            .args(running_as_root().then_some("--user=root"))
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", install.display()));
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(
            self.dir.path().join("init.sql"),
            "CREATE DATABASE IF NOT EXISTS test;\n",
        )
        .expect("the init file is written");
    }

    fn spawn(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .expect("the server log can be opened");
        let log_err = log.try_clone().expect("the log handle can be cloned");
        let mut command = match self.kind {
            Kind::Postgres => {
                let mut c = self.command(&postgres_binary("postgres"));
                c.arg("-D")
                    .arg(self.data())
                    .args(["-p", &self.port.to_string(), "-k"])
                    .arg(self.dir.path())
                    .args(["-c", "listen_addresses=127.0.0.1"])
                    .args(["-c", "max_connections=60", "-c", "shared_buffers=16MB"])
                    .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                    .args(["-c", "full_page_writes=off"]);
                c
            }
            Kind::Mariadb => {
                let server = which("mariadbd", &[PathBuf::from("/usr/sbin")])
                    .or_else(|| which("mysqld", &[PathBuf::from("/usr/sbin")]))
                    .unwrap_or_else(|| {
                        panic!("this test starts its own MariaDB and found no mariadbd: {MARIADB_PACKAGE}")
                    });
                let dir = self.dir.path();
                let mut c = self.command(&server);
                c.arg("--no-defaults")
                    .arg(format!("--datadir={}", self.data().display()))
                    .arg(format!("--port={}", self.port))
                    .arg("--bind-address=127.0.0.1")
                    .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
                    .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
                    .arg(format!("--init-file={}", dir.join("init.sql").display()))
                    .arg(format!("--tmpdir={}", dir.join("tmp").display()))
                    .args([
                        "--skip-name-resolve",
                        "--skip-log-bin",
                        "--innodb-buffer-pool-size=32M",
                        // Commits reach the OS at once: a killed server keeps them.
                        "--innodb-flush-log-at-trx-commit=2",
                        "--max-connections=100",
                    ])
                    .args(running_as_root().then_some("--user=root"));
                c
            }
        };
        command
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the private {:?} server: {e}", self.kind))
    }

    /// Starts the server (it must be stopped) and returns once it accepts a session.
    pub fn start_blocking(&self) {
        let mut slot = self.child();
        assert!(slot.is_none(), "the private server is already running");
        let child = slot.insert(self.spawn());
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.session() {
                Ok(()) => return,
                Err(why) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        *slot = None;
                        panic!(
                            "the private {:?} server exited with {status} while starting: {why}\n{}",
                            self.kind,
                            self.log_tail()
                        );
                    }
                    if Instant::now() > deadline {
                        panic!(
                            "the private {:?} server did not accept a session within {START_TIMEOUT:?}: \
                             {why}\n{}",
                            self.kind,
                            self.log_tail()
                        );
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server and waits until it has exited: its port then refuses connections.
    /// PostgreSQL gets a fast shutdown (every session is ended), MariaDB is killed.
    pub fn stop_blocking(&self) {
        let Some(mut child) = self.child().take() else {
            return;
        };
        match self.kind {
            Kind::Postgres => {
                signal(child.id(), "INT");
                let deadline = Instant::now() + STOP_TIMEOUT;
                while matches!(child.try_wait(), Ok(None)) {
                    if Instant::now() > deadline {
                        kill_hard(&mut child);
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            Kind::Mariadb => kill_hard(&mut child),
        }
        let _ = child.wait();
    }

    /// Freezes every process of the server (SIGSTOP): connections stay open, nothing answers.
    /// Sessions opened while it is frozen wait in the listen queue.
    pub fn freeze(&self) {
        self.signal_group("STOP");
        // kill(1) returns once the signal is sent, not once it took effect: a query that
        // arrives first may still be answered. Wait until every thread shows it is stopped.
        let pid = self.child().as_ref().map(Child::id);
        let pid = pid.expect("the private server runs");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !server_processes(pid).into_iter().all(all_threads_stopped)
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Lets a frozen server run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal_group("CONT");
    }

    fn signal_group(&self, name: &str) {
        let pid = self.child().as_ref().map(Child::id);
        let pid = pid.expect("the private server runs");
        for process in server_processes(pid) {
            signal(process, name);
        }
    }

    /// Opens and closes one session; `Err` says why it failed.
    fn session(&self) -> Result<(), String> {
        let url = self.url();
        match self.kind {
            #[cfg(feature = "postgres")]
            Kind::Postgres => <diesel::PgConnection as diesel::Connection>::establish(&url)
                .map(drop)
                .map_err(|e| e.to_string()),
            #[cfg(feature = "mysql")]
            Kind::Mariadb => <diesel::MysqlConnection as diesel::Connection>::establish(&url)
                .map(drop)
                .map_err(|e| e.to_string()),
            #[allow(unreachable_patterns)]
            _ => Err(format!(
                "cachier-sql's tests were built without the feature for {url}"
            )),
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// A core on this server with the crate's default settings.
    pub async fn open_core(&self) -> SqlCore {
        let config = Config::from_url(&self.url()).expect("the private server's URL parses");
        SqlCore::connect(config)
            .await
            .unwrap_or_else(|e| panic!("cannot open a core on the private server: {e}"))
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child().take() {
            // Every process of the server, frozen or not, and whatever it was doing.
            for process in server_processes(child.id()) {
                signal(process, "KILL");
            }
            kill_hard(&mut child);
        }
        // `dir` is removed when the field drops, after this.
    }
}

#[cachier_core::async_trait]
impl Outage for PrivateServer {
    async fn core(&self) -> Arc<dyn Core> {
        Arc::new(self.open_core().await)
    }

    async fn stop(&self) {
        blocking(|| self.stop_blocking());
    }

    async fn start(&self) {
        blocking(|| self.start_blocking());
    }
}

/// Runs blocking work from async code without stalling the runtime's other tasks where the
/// runtime allows it (a multi-threaded one).
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

fn kill_hard(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The server process `pid` and its children: PostgreSQL serves each session from a process
/// of its own (in a session of its own, so not reachable as a process group).
fn server_processes(pid: u32) -> Vec<u32> {
    let mut processes = vec![pid];
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return processes;
    };
    for entry in entries.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|ppid| ppid.parse::<u32>().ok());
        if parent == Some(pid) {
            processes.push(child);
        }
    }
    processes
}

/// Sends `signal` (`INT`, `QUIT`, ...) to `pid` with kill(1).
/// Whether every thread of `pid` is stopped by a signal (state `T` in `/proc/PID/task/*/stat`);
/// a process that is gone counts as stopped.
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).map_or(true, |stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state == "T" || state == "t")
        })
    })
}

fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// `program` on `PATH`, else in one of `extra` (in order).
fn which(program: &str, extra: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().cloned())
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// A PostgreSQL server program: on `PATH`, else in Debian's `/usr/lib/postgresql/*/bin`, the
/// newest version first.
fn postgres_binary(name: &str) -> PathBuf {
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| {
            dirs.flatten()
                .map(|d| {
                    let version = d.file_name().to_string_lossy().parse().unwrap_or(0);
                    (version, d.path().join("bin"))
                })
                .collect()
        })
        .unwrap_or_default();
    versioned.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    let dirs: Vec<PathBuf> = versioned.into_iter().map(|(_, dir)| dir).collect();
    which(name, &dirs).unwrap_or_else(|| {
        panic!(
            "this test starts its own PostgreSQL and found no `{name}` on PATH or in \
             /usr/lib/postgresql/*/bin: {POSTGRES_PACKAGE}"
        )
    })
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().next().map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

/// The user and group ids of a system user, from `/etc/passwd`.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() > 3 && fields[0] == name {
            Some((fields[2].parse().ok()?, fields[3].parse().ok()?))
        } else {
            None
        }
    })
}
