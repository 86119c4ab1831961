//! Raw hyper HTTP/1.1 clients (one keep-alive connection each, `TCP_NODELAY`), and a load of
//! `clients` such connections repeating one request for a fixed duration or a fixed count.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;

use super::{Samples, ms};

/// The sending half of one HTTP/1.1 connection.
pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Opens one HTTP/1.1 connection to `addr` (its driver runs as a task).
pub async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// A request for `path` on `addr`; a body is sent as JSON.
pub fn build(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&'static [u8]>,
) -> http::Request<Full<Bytes>> {
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    req.body(Full::new(Bytes::from_static(body.unwrap_or(b""))))
        .expect("valid request")
}

/// One request on a fresh connection; the body of a 2xx answer.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&'static [u8]>,
) -> anyhow::Result<Bytes> {
    let mut s = connect(addr).await?;
    let resp = s.send_request(build(addr, method, path, body)).await?;
    anyhow::ensure!(
        resp.status().is_success(),
        "{method} {path}: {}",
        resp.status()
    );
    Ok(resp.into_body().collect().await?.to_bytes())
}

/// How long a load runs.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    /// Every client repeats until this much time has passed.
    Elapsed(Duration),
    /// The clients share this many iterations.
    Count(usize),
}

/// Tells the clients of a load whether to start one more iteration.
#[derive(Debug)]
pub struct Gate {
    until: Until,
    stop: AtomicBool,
    left: AtomicUsize,
}

impl Gate {
    pub fn new(until: Until) -> Arc<Gate> {
        let left = match until {
            Until::Elapsed(_) => usize::MAX,
            Until::Count(n) => n,
        };
        Arc::new(Gate {
            until,
            stop: AtomicBool::new(false),
            left: AtomicUsize::new(left),
        })
    }

    /// Takes one iteration; false when the load is over.
    pub fn next(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        match self.until {
            Until::Elapsed(_) => true,
            Until::Count(_) => self
                .left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
        }
    }

    /// For [`Until::Elapsed`]: waits that long, then stops the clients. Returns at once for
    /// [`Until::Count`].
    pub async fn run(&self) {
        if let Until::Elapsed(d) = self.until {
            tokio::time::sleep(d).await;
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

/// What a load measured: latencies of the successful requests, errors, wall time.
#[derive(Debug)]
pub struct LoadResult {
    pub latencies: Samples,
    pub errors: u64,
    pub elapsed: Duration,
}

impl LoadResult {
    /// Successful requests per second.
    pub fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// `clients` keep-alive connections repeat one request (a non-2xx answer or a broken connection
/// is an error; the client then reconnects).
pub async fn load(
    addr: SocketAddr,
    method: &'static str,
    path: &str,
    body: Option<&'static [u8]>,
    clients: usize,
    until: Until,
) -> anyhow::Result<LoadResult> {
    let gate = Gate::new(until);
    let mut tasks = Vec::new();
    let started = Instant::now();
    for _ in 0..clients {
        let gate = gate.clone();
        let path = path.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            let mut sender = connect(addr).await?;
            while gate.next() {
                let t = Instant::now();
                let ok = match sender.send_request(build(addr, method, &path, body)).await {
                    Ok(resp) => {
                        let ok = resp.status().is_success();
                        ok && resp.into_body().collect().await.is_ok()
                    }
                    Err(_) => false,
                };
                if ok {
                    lat.push(ms(t.elapsed()));
                } else {
                    errors += 1;
                    sender = connect(addr).await?;
                }
            }
            anyhow::Ok((lat, errors))
        }));
    }
    gate.run().await;
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await??;
        latencies.extend(lat);
        errors += e;
    }
    Ok(LoadResult {
        latencies: Samples::new(latencies),
        errors,
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counted_gate_hands_out_exactly_its_count() {
        let gate = Gate::new(Until::Count(3));
        let taken = (0..10).filter(|_| gate.next()).count();
        assert_eq!(taken, 3);
    }

    #[tokio::test]
    async fn a_timed_gate_closes_after_its_duration() {
        let gate = Gate::new(Until::Elapsed(Duration::from_millis(10)));
        assert!(gate.next());
        gate.run().await;
        assert!(!gate.next());
    }
}
