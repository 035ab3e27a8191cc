//! A TCP proxy on loopback in front of one upstream, with switchable network faults:
//! the "slow network" of the fault matrix. Plain threads and blocking sockets; at most
//! [`MAX_CONNECTIONS`] connections at once, so a misbehaving client cannot make it spawn
//! without bound.
//!
//! A fault applies to the connections accepted while it is set. Setting a mode closes
//! every open connection, so that the client's keep-alive pool cannot carry a
//! connection from an earlier mode into the next case.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Connections served at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 64;

/// What the proxy does to the connections it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Forward both ways untouched.
    Pass,
    /// Hold the first byte of each answer for this long, then forward.
    Delay(Duration),
    /// Forward the answer at this many bytes per second.
    Throttle(u32),
    /// Take the request, then close the connection with a reset (RST), answering nothing.
    Reset,
    /// Forward only the first this many bytes of an answer, then close.
    Truncate(usize),
}

/// One connection's sockets (for closing it from outside) and whether its request has
/// gone upstream with no byte of answer back yet.
struct Conn {
    client: TcpStream,
    upstream: Option<TcpStream>,
    awaiting: bool,
}

struct Shared {
    upstream: SocketAddr,
    mode: Mutex<Mode>,
    conns: Mutex<HashMap<u64, Conn>>,
    next_id: AtomicU64,
    stop: AtomicBool,
}

/// The proxy; stops accepting and closes its connections when dropped.
pub(crate) struct Proxy {
    /// The loopback port clients connect to.
    pub(crate) port: u16,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to 127.0.0.1:`upstream`.
    pub(crate) fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared {
            upstream: SocketAddr::from(([127, 0, 0, 1], upstream)),
            mode: Mutex::new(Mode::Pass),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let accept = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if accept.stop.load(Ordering::Acquire) {
                    return;
                }
                let Ok(client) = stream else { continue };
                if accept.conns.lock().unwrap().len() >= MAX_CONNECTIONS {
                    continue;
                }
                let shared = accept.clone();
                std::thread::spawn(move || serve(&shared, client));
            }
        });
        Proxy { port, shared }
    }

    /// Switches the fault for new connections and closes the open ones.
    pub(crate) fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
        for conn in self.shared.conns.lock().unwrap().values() {
            close(conn);
        }
    }

    /// Connections whose request went upstream and that have no byte of answer yet:
    /// queries in flight at the upstream.
    pub(crate) fn awaiting(&self) -> usize {
        let conns = self.shared.conns.lock().unwrap();
        conns.values().filter(|c| c.awaiting).count()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        // Wakes the accept loop so that it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        for conn in self.shared.conns.lock().unwrap().values() {
            close(conn);
        }
    }
}

fn close(conn: &Conn) {
    let _ = conn.client.shutdown(Shutdown::Both);
    if let Some(u) = &conn.upstream {
        let _ = u.shutdown(Shutdown::Both);
    }
}

/// Serves one client connection under the mode set when it was accepted.
fn serve(shared: &Arc<Shared>, client: TcpStream) {
    let mode = *shared.mode.lock().unwrap();
    if mode == Mode::Reset {
        reset(client);
        return;
    }
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let Ok(client_handle) = client.try_clone() else {
        return;
    };
    shared.conns.lock().unwrap().insert(
        id,
        Conn {
            client: client_handle,
            upstream: None,
            awaiting: false,
        },
    );
    // Connection refused or slow to connect: the client sees its connection closed, as
    // it would see a dead server behind a load balancer.
    if let Ok(upstream) = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(2)) {
        pump(shared, id, mode, client, upstream);
    }
    if let Some(conn) = shared.conns.lock().unwrap().remove(&id) {
        close(&conn);
    }
}

/// Waits (at most 2 s) for the request, then drops the socket with it unread: the kernel
/// answers a close with unread data by a reset.
fn reset(client: TcpStream) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(2)));
    let mut byte = [0u8; 1];
    let _ = client.peek(&mut byte);
    drop(client);
}

/// Copies the request upstream on a second thread and the answer back on this one,
/// applying `mode` to the answer.
fn pump(shared: &Arc<Shared>, id: u64, mode: Mode, client: TcpStream, upstream: TcpStream) {
    let (Ok(mut client_in), Ok(mut upstream_out), Ok(upstream_handle)) = (
        client.try_clone(),
        upstream.try_clone(),
        upstream.try_clone(),
    ) else {
        return;
    };
    if let Some(conn) = shared.conns.lock().unwrap().get_mut(&id) {
        conn.upstream = Some(upstream_handle);
    }
    let requests = shared.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match client_in.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if upstream_out.write_all(&buf[..n]).is_err() {
                break;
            }
            if let Some(conn) = requests.conns.lock().unwrap().get_mut(&id) {
                conn.awaiting = true;
            }
        }
        let _ = upstream_out.shutdown(Shutdown::Write);
    });
    let (mut upstream_in, mut client_out) = (upstream, client);
    let mut buf = [0u8; 16 * 1024];
    // Bytes of the current answer forwarded so far.
    let mut sent = 0usize;
    loop {
        let n = match upstream_in.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // The first bytes after a request start a new answer: the faults below apply
        // to each answer, however many a keep-alive connection carries.
        if let Some(conn) = shared.conns.lock().unwrap().get_mut(&id) {
            if std::mem::replace(&mut conn.awaiting, false) {
                sent = 0;
            }
        }
        let data = &buf[..n];
        let written = match mode {
            Mode::Pass | Mode::Reset => client_out.write_all(data),
            Mode::Delay(hold) => {
                if sent == 0 {
                    std::thread::sleep(hold);
                }
                client_out.write_all(data)
            }
            Mode::Throttle(bytes_per_s) => throttled(&mut client_out, data, bytes_per_s),
            Mode::Truncate(limit) => {
                let room = limit.saturating_sub(sent).min(data.len());
                let _ = client_out.write_all(&data[..room]);
                if sent + room >= limit {
                    return;
                }
                Ok(())
            }
        };
        if written.is_err() {
            return;
        }
        sent += n;
    }
}

/// Writes `data` in tenth-of-a-second slices of `bytes_per_s / 10` bytes.
fn throttled(out: &mut TcpStream, data: &[u8], bytes_per_s: u32) -> std::io::Result<()> {
    let slice = (bytes_per_s as usize / 10).max(1);
    for piece in data.chunks(slice) {
        let started = Instant::now();
        out.write_all(piece)?;
        std::thread::sleep(Duration::from_millis(100).saturating_sub(started.elapsed()));
    }
    Ok(())
}
