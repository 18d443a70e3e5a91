//! A throwaway `redis-server` for tests (this crate's `testing` feature).

// Waiting for a child process to listen is about a real process, not the cache's time.
#![allow(clippy::disallowed_methods)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Set to make [`RedisServer::start`] panic instead of skipping when no server can be
/// started (CI sets it, so a missing server fails the run rather than skipping the tests).
pub const REQUIRE_ENV: &str = "AUTOREFRESH_REQUIRE_REDIS";

/// A `redis-server` process of its own, on a free loopback port, in a fresh directory, with
/// persistence off; killed and cleaned up when dropped.
///
/// The binary is `$REDIS_SERVER`, else `redis-server` on the `PATH`.
///
/// # Examples
///
/// ```no_run
/// use autorefresh_redis::testing::RedisServer;
///
/// let Some(server) = RedisServer::start() else { return }; // no redis-server here: skip
/// println!("connect to {}", server.url());
/// ```
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts a server and waits until it accepts connections.
    ///
    /// Returns `None`, after saying why on stderr, when no server can be started, unless
    /// [`REQUIRE_ENV`] is set.
    ///
    /// # Panics
    ///
    /// When no server can be started and [`REQUIRE_ENV`] is set.
    pub fn start() -> Option<Self> {
        match Self::try_start() {
            Ok(server) => Some(server),
            Err(why) if std::env::var_os(REQUIRE_ENV).is_some() => {
                panic!("{REQUIRE_ENV} is set but no redis-server could be started: {why}")
            }
            Err(why) => {
                eprintln!("skipping: no redis-server could be started ({why}); install redis-server or set REDIS_SERVER");
                None
            }
        }
    }

    fn try_start() -> Result<Self, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let dir =
            std::env::temp_dir().join(format!("autorefresh-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut server = Self { child: None, port, dir };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let binary = std::env::var_os("REDIS_SERVER").unwrap_or_else(|| "redis-server".into());
        let child = Command::new(&binary)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", binary.to_string_lossy()))?;
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            if Instant::now() > deadline {
                return Err(format!("redis-server did not listen on {addr} within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server at once (SIGKILL), as a crash: with persistence off, its data is
    /// gone. Clients see connection errors until [`restart`](Self::restart).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty.
    ///
    /// # Panics
    ///
    /// When it does not start.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(why) = self.spawn() {
            panic!("redis-server did not restart: {why}");
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
