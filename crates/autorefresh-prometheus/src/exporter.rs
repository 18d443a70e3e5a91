//! [`Exporter`]: a minimal HTTP/1.1 server for `/metrics`, and the one-call setup.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::names::{MetricType, METRICS};
use crate::recorder::{Inner, PrometheusMetrics};
use crate::Error;

/// How often the server drains the recorder's histogram samples when nobody scrapes (the
/// exporter's own default).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);
/// The longest a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head accepted.
const MAX_REQUEST: usize = 8 * 1024;
/// The pause after a failed `accept` (for example, out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// The Prometheus text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Gives `builder` this crate's buckets for each of its histograms, so they render as
/// Prometheus histograms (without buckets the exporter renders summaries).
///
/// For applications that build their own `metrics-exporter-prometheus` recorder;
/// [`PrometheusMetrics::install`] does it for you.
///
/// # Errors
///
/// [`Error::Buckets`] if the exporter rejects a bucket list (it rejects only empty ones, and
/// none is empty).
pub fn set_buckets(builder: PrometheusBuilder) -> Result<PrometheusBuilder, Error> {
    METRICS.iter().filter(|metric| metric.kind == MetricType::Histogram).try_fold(
        builder,
        |builder, metric| {
            builder
                .set_buckets_for_metric(Matcher::Full(metric.name.to_owned()), metric.buckets)
                .map_err(|source| Error::Buckets { metric: metric.name, source })
        },
    )
}

impl PrometheusMetrics {
    /// One call: installs a `metrics-exporter-prometheus` recorder (with this crate's
    /// histogram buckets) as the global `metrics` recorder, serves it on `http://addr/metrics`
    /// from a task on the current Tokio runtime, and returns the cache's metrics, registered
    /// with the server so every scrape flushes them.
    ///
    /// Give port 0 to get an ephemeral port; [`Exporter::local_addr`] tells which. Call it
    /// once per process; add more caches with [`PrometheusMetrics::new`] and
    /// [`Exporter::register`].
    ///
    /// # Errors
    ///
    /// [`Error::NoRuntime`] outside a Tokio runtime, [`Error::Bind`] if `addr` cannot be
    /// listened on, [`Error::RecorderAlreadyInstalled`] if a global recorder exists. On error
    /// nothing is installed and nothing runs.
    ///
    /// # Examples
    ///
    /// ```
    /// use autorefresh_prometheus::PrometheusMetrics;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), autorefresh_prometheus::Error> {
    /// // Port 0: any free port. A service would use a fixed one, such as 0.0.0.0:9898.
    /// let addr = "127.0.0.1:0".parse().expect("a socket address");
    /// let (metrics, exporter) = PrometheusMetrics::install("jobs", addr)?;
    /// println!("metrics on {}", exporter.url());
    /// // AutoRefresh::builder("jobs").metrics(metrics) ...
    /// # drop(metrics);
    ///
    /// // Only one global recorder per process:
    /// assert!(PrometheusMetrics::install("more", addr).is_err());
    /// exporter.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn install(cache_name: &str, addr: SocketAddr) -> Result<(Self, Exporter), Error> {
        let runtime = Handle::try_current().map_err(|_| Error::NoRuntime { addr })?;
        let builder = set_buckets(PrometheusBuilder::new())?;
        let (listener, local_addr) = bind(&runtime, addr)?;
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).map_err(|_| Error::RecorderAlreadyInstalled)?;
        let metrics = Self::new(cache_name);
        let exporter = Exporter::spawn(&runtime, listener, local_addr, handle);
        exporter.register(&metrics);
        Ok((metrics, exporter))
    }
}

/// Binds `addr` now, on `runtime`'s reactor: the error names the address, and port 0 resolves
/// to the real one.
fn bind(runtime: &Handle, addr: SocketAddr) -> Result<(TcpListener, SocketAddr), Error> {
    let bind_error = |source| Error::Bind { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
    listener.set_nonblocking(true).map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;
    let _entered = runtime.enter();
    let listener = TcpListener::from_std(listener).map_err(bind_error)?;
    Ok((listener, local_addr))
}

/// The metrics registered with an [`Exporter`], flushed before each render.
#[derive(Default)]
struct Registered(Mutex<Vec<Weak<Inner>>>);

impl Registered {
    fn add(&self, metrics: &PrometheusMetrics) {
        let mut list = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        list.retain(|weak| weak.strong_count() > 0);
        if !list.iter().any(|weak| weak.as_ptr() == Arc::as_ptr(&metrics.inner)) {
            list.push(Arc::downgrade(&metrics.inner));
        }
    }

    fn flush(&self) {
        let list = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for inner in list.iter().filter_map(Weak::upgrade) {
            inner.flush();
        }
    }
}

struct Shared {
    handle: PrometheusHandle,
    registered: Registered,
}

impl Shared {
    fn render(&self) -> String {
        self.registered.flush();
        self.handle.render()
    }
}

/// Serves `/metrics` over HTTP/1.1 (one request per connection) from a task on a Tokio
/// runtime, and runs the recorder's upkeep.
///
/// Every scrape first flushes the [`PrometheusMetrics`] registered with it. Dropping the
/// `Exporter` leaves the server running until its runtime shuts down; call
/// [`shutdown`](Self::shutdown) to stop it and wait for its tasks.
///
/// `GET` (or `HEAD`) `/metrics` answers 200 with the Prometheus text format; any other path
/// 404, any other method 405, a malformed or oversized request 400.
#[must_use = "the server runs until `shutdown`; keep the Exporter to stop it or read its address"]
pub struct Exporter {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Exporter {
    /// Serves `handle` on `http://addr/metrics`, for applications that installed their own
    /// recorder (see [`set_buckets`]). Register the caches' metrics with
    /// [`register`](Self::register) so scrapes flush them.
    ///
    /// # Errors
    ///
    /// [`Error::NoRuntime`] outside a Tokio runtime, [`Error::Bind`] if `addr` cannot be
    /// listened on.
    pub fn serve(handle: PrometheusHandle, addr: SocketAddr) -> Result<Self, Error> {
        let runtime = Handle::try_current().map_err(|_| Error::NoRuntime { addr })?;
        let (listener, local_addr) = bind(&runtime, addr)?;
        Ok(Self::spawn(&runtime, listener, local_addr, handle))
    }

    fn spawn(
        runtime: &Handle,
        listener: TcpListener,
        local_addr: SocketAddr,
        handle: PrometheusHandle,
    ) -> Self {
        let shared = Arc::new(Shared { handle, registered: Registered::default() });
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        tracker.spawn_on(
            accept_loop(listener, Arc::clone(&shared), cancel.clone(), tracker.clone()),
            runtime,
        );
        Self { shared, local_addr, cancel, tracker }
    }

    /// Flushes `metrics` before every scrape and [`render`](Self::render). Registering twice
    /// is harmless; the exporter does not keep dropped metrics alive.
    pub fn register(&self, metrics: &PrometheusMetrics) {
        self.shared.registered.add(metrics);
    }

    /// The address the server listens on (with the real port when port 0 was given).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://<local_addr>/metrics`.
    pub fn url(&self) -> String {
        format!("http://{}/metrics", self.local_addr)
    }

    /// The recorder's handle.
    pub fn handle(&self) -> &PrometheusHandle {
        &self.shared.handle
    }

    /// What a scrape would return now: flushes the registered metrics, then renders.
    pub fn render(&self) -> String {
        self.shared.render()
    }

    /// Stops accepting, ends the open connections, and waits until every task of the server
    /// has finished.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl fmt::Debug for Exporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exporter")
            .field("local_addr", &self.local_addr)
            .field("running", &!self.cancel.is_cancelled())
            .finish_non_exhaustive()
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let mut upkeep = tokio::time::interval(UPKEEP_INTERVAL);
    upkeep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = upkeep.tick() => shared.handle.run_upkeep(),
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    tracker.spawn(connection(stream, Arc::clone(&shared), cancel.clone()));
                }
                Err(_) => tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                },
            },
        }
    }
}

async fn connection(mut stream: TcpStream, shared: Arc<Shared>, cancel: CancellationToken) {
    let served = async {
        let response = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
            Ok(Ok(Some(head))) => respond(&head, &shared),
            Ok(Ok(None)) | Ok(Err(_)) => return,
            Err(_elapsed) => status(408, "Request Timeout", "request timed out\n"),
        };
        // The client may have gone: nothing to do about a failed write.
        let _ = stream.write_all(&response).await;
        let _ = stream.shutdown().await;
    };
    tokio::select! {
        () = cancel.cancelled() => {}
        () = served => {}
    }
}

/// Reads up to the end of the request head. `Ok(None)`: the client closed first.
async fn read_head(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0_u8; 1024];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&chunk[..read]);
        if head.windows(4).any(|window| window == b"\r\n\r\n") || head.len() > MAX_REQUEST {
            return Ok(Some(head));
        }
    }
}

/// The whole response to a request head.
fn respond(head: &[u8], shared: &Shared) -> Vec<u8> {
    let Some(request_line) = head.split(|byte| *byte == b'\n').next() else {
        return status(400, "Bad Request", "bad request\n");
    };
    let request_line = String::from_utf8_lossy(request_line);
    let mut parts = request_line.trim_end().split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return status(400, "Bad Request", "bad request\n");
    };
    if !version.starts_with("HTTP/1.") || head.len() > MAX_REQUEST {
        return status(400, "Bad Request", "bad request\n");
    }
    let path = target.split('?').next().unwrap_or(target);
    if path != "/metrics" {
        return status(404, "Not Found", "not found: try /metrics\n");
    }
    match method {
        "GET" => ok(shared.render().as_bytes(), true),
        "HEAD" => ok(shared.render().as_bytes(), false),
        _ => {
            let mut response = status(405, "Method Not Allowed", "use GET\n");
            // Insert the Allow header before the blank line ending the head.
            let at = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 2;
            response.splice(at..at, b"Allow: GET, HEAD\r\n".iter().copied());
            response
        }
    }
}

fn ok(body: &[u8], with_body: bool) -> Vec<u8> {
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        response.extend_from_slice(body);
    }
    response
}

fn status(code: u16, reason: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        let handle = PrometheusBuilder::new().build_recorder().handle();
        Shared { handle, registered: Registered::default() }
    }

    fn status_line(response: &[u8]) -> String {
        let text = String::from_utf8_lossy(response);
        text.lines().next().unwrap_or_default().to_owned()
    }

    #[test]
    fn routes_requests() {
        let shared = shared();
        let cases: [(&[u8], &str); 6] = [
            (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 200 OK"),
            (b"GET /metrics?name[]=x HTTP/1.0\r\n\r\n", "HTTP/1.1 200 OK"),
            (b"HEAD /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK"),
            (b"GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
            (b"POST /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 405 Method Not Allowed"),
            (b"nonsense\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        ];
        for (request, expected) in cases {
            assert_eq!(status_line(&respond(request, &shared)), expected, "{request:?}");
        }
    }

    #[test]
    fn method_not_allowed_names_the_allowed_ones() {
        let response = respond(b"DELETE /metrics HTTP/1.1\r\n\r\n", &shared());
        let text = String::from_utf8(response).unwrap();
        assert!(text.contains("\r\nAllow: GET, HEAD\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nuse GET\n"), "{text}");
    }

    #[test]
    fn head_has_no_body() {
        let response = respond(b"HEAD /metrics HTTP/1.1\r\n\r\n", &shared());
        assert!(response.ends_with(b"\r\n\r\n"));
    }

    #[test]
    fn oversized_request_is_rejected() {
        let mut request = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        request.resize(MAX_REQUEST + 10, b'a');
        assert_eq!(status_line(&respond(&request, &shared())), "HTTP/1.1 400 Bad Request");
    }

    #[test]
    fn buckets_cover_every_histogram() {
        assert!(set_buckets(PrometheusBuilder::new()).is_ok());
        for metric in METRICS {
            assert_eq!(
                metric.kind == MetricType::Histogram,
                !metric.buckets.is_empty(),
                "{}",
                metric.name
            );
            assert!(metric.buckets.windows(2).all(|pair| pair[0] < pair[1]), "{}", metric.name);
        }
    }
}
