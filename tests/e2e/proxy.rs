//! A TCP proxy the test controls, between agents and the hub's broker: open, hold the
//! hub→agent direction (receipts pile up unread), or cut every connection.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const OPEN: u8 = 0;
const HOLD_DOWN: u8 = 1;
const CUT: u8 = 2;

pub struct Proxy {
    pub port: u16,
    mode: Arc<AtomicU8>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(OPEN));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (m, cs) = (mode.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if m.load(Ordering::SeqCst) == CUT {
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                cs.lock()
                    .unwrap()
                    .extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                let up = (
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    m.clone(),
                );
                std::thread::spawn(move || pump(up.0, up.1, up.2, false));
                let m = m.clone();
                std::thread::spawn(move || pump(server, client, m, true));
            }
        });
        Self { port, mode, conns }
    }

    pub fn open(&self) {
        self.mode.store(OPEN, Ordering::SeqCst);
    }

    /// Stops forwarding hub → agent (the agent's records still reach the hub).
    pub fn hold_down(&self) {
        self.mode.store(HOLD_DOWN, Ordering::SeqCst);
    }

    /// Closes every connection and refuses new ones until [`Proxy::open`].
    pub fn cut(&self) {
        self.mode.store(CUT, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.shutdown(Shutdown::Both).ok();
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, mode: Arc<AtomicU8>, downstream: bool) {
    from.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match mode.load(Ordering::SeqCst) {
            CUT => break,
            HOLD_DOWN if downstream => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            _ => {}
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    from.shutdown(Shutdown::Both).ok();
    to.shutdown(Shutdown::Both).ok();
}
