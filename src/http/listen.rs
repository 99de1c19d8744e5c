//! `--web.listen-address` parsing and binding.
use std::net::SocketAddr;

/// One `--web.listen-address`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// `:PORT`: every IPv4 and IPv6 address, on one `[::]` socket with
    /// IPV6_V6ONLY off (whatever `net.ipv6.bindv6only` says); every IPv4
    /// address (`0.0.0.0`) when the host has IPv6 disabled.
    Any(u16),
    /// One address, as given or as a host name resolved to.
    Addr(SocketAddr),
}

/// Parse one `--web.listen-address`: `:port` (every IPv4 and IPv6 address),
/// `host:port`, `[v6]:port`. Host names resolve now; every address they
/// resolve to is bound.
pub fn parse_listen(s: &str) -> anyhow::Result<Vec<Listen>> {
    use std::net::ToSocketAddrs;
    let fix = || {
        format!(
            "--web.listen-address {s:?}: expected :PORT, HOST:PORT or [IPv6]:PORT, for example :{}",
            crate::cli::DEFAULT_PORT
        )
    };
    let bad_port = |port: &str| anyhow::anyhow!("{}: bad port {port:?}", fix());
    if let Some(port) = s.strip_prefix(':') {
        let port = port.parse::<u16>().map_err(|_| bad_port(port))?;
        return Ok(vec![Listen::Any(port)]);
    }
    let (_, port) = s.rsplit_once(':').ok_or_else(|| anyhow::anyhow!(fix()))?;
    port.parse::<u16>().map_err(|_| bad_port(port))?;
    let addrs: Vec<Listen> = s
        .to_socket_addrs()
        .map_err(|e| anyhow::anyhow!("{}: {e}", fix()))?
        .map(Listen::Addr)
        .collect();
    if addrs.is_empty() {
        anyhow::bail!("{}: the host resolves to no address", fix());
    }
    Ok(addrs)
}

/// Bind every address now (before anything slow loads), so a busy port is
/// the first thing reported.
pub fn bind(addrs: &[Listen]) -> anyhow::Result<Vec<std::net::TcpListener>> {
    addrs
        .iter()
        .map(|l| {
            let l = match *l {
                Listen::Addr(addr) => bind_addr(addr).map_err(|e| cannot_listen(addr, e))?,
                Listen::Any(port) => bind_any(port, bind_dual_stack)?,
            };
            l.set_nonblocking(true)?;
            Ok(l)
        })
        .collect()
}

fn cannot_listen(addr: SocketAddr, e: std::io::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot listen on {addr}: {e}. Choose another with --web.listen-address=<host:port>"
    )
}

/// The listen backlog of every listener (the kernel caps it at
/// `net.core.somaxconn`), as Go's net package asks for: a burst of new
/// connections (a flood, many Prometheus servers at once) waits in the
/// accept queue instead of having its SYNs dropped and retried a second
/// later.
const BACKLOG: i32 = 4096;

/// `addr` with [`BACKLOG`], reusing the address as
/// `std::net::TcpListener::bind` does.
fn bind_addr(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    Ok(s.into())
}

/// `[::]:port` with IPV6_V6ONLY off: IPv4 clients arrive as
/// `::ffff:a.b.c.d`.
fn bind_dual_stack(port: u16) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    s.set_only_v6(false)?;
    // As std::net::TcpListener::bind does: a restart can bind the port
    // while connections of the previous process sit in TIME_WAIT.
    s.set_reuse_address(true)?;
    s.bind(&SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)).into())?;
    s.listen(BACKLOG)?;
    Ok(s.into())
}

/// Whether an IPv6 socket failed because the host has IPv6 disabled: no
/// AF_INET6 at all (`ipv6.disable=1`), or no IPv6 address to bind.
fn ipv6_unavailable(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL)
    )
}

/// `:port`: the dual-stack socket `dual` makes, or `0.0.0.0:port` (one info
/// line) when IPv6 is unavailable. Every other failure, a busy port
/// included, is an error: IPv4-only is never a silent substitute for a
/// dual-stack socket the host could have had.
fn bind_any(
    port: u16,
    dual: impl FnOnce(u16) -> std::io::Result<std::net::TcpListener>,
) -> anyhow::Result<std::net::TcpListener> {
    match dual(port) {
        Ok(l) => Ok(l),
        Err(e) if ipv6_unavailable(&e) => {
            let v4 = SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, port));
            let l = bind_addr(v4).map_err(|e| cannot_listen(v4, e))?;
            tracing::info!(
                listen = %format_args!(":{port}"), error = %e,
                "IPv6 is unavailable on this host; listening on {} (IPv4 only)",
                l.local_addr().unwrap_or(v4)
            );
            Ok(l)
        }
        Err(e) => Err(cannot_listen(
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)),
            e,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn listen_address_forms() {
        assert_eq!(parse_listen(":9863").unwrap(), vec![Listen::Any(9863)]);
        assert_eq!(
            parse_listen("0.0.0.0:9863").unwrap(),
            vec![Listen::Addr("0.0.0.0:9863".parse().unwrap())]
        );
        assert_eq!(
            parse_listen("127.0.0.1:1").unwrap(),
            vec![Listen::Addr("127.0.0.1:1".parse().unwrap())]
        );
        assert_eq!(
            parse_listen("[::1]:2").unwrap(),
            vec![Listen::Addr("[::1]:2".parse().unwrap())]
        );
        assert!(parse_listen("localhost:3")
            .unwrap()
            .iter()
            .all(|a| matches!(a, Listen::Addr(a) if a.ip().is_loopback() && a.port() == 3)));
        for bad in ["9863", ":x", "host", ":99999", "no.such.host.invalid:1"] {
            let e = parse_listen(bad).unwrap_err().to_string();
            assert!(e.contains("--web.listen-address"), "{bad}: {e}");
        }
    }

    /// Whether the host has an IPv6 loopback address.
    fn host_has_ipv6_loopback() -> bool {
        std::fs::read_to_string("/proc/net/if_inet6").is_ok_and(|t| {
            t.lines()
                .any(|l| l.starts_with("00000000000000000000000000000001 "))
        })
    }

    fn accept_from(l: &std::net::TcpListener, to: SocketAddr) -> SocketAddr {
        let _c = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to {to}: {e}"));
        l.accept()
            .unwrap_or_else(|e| panic!("accept of {to}: {e}"))
            .1
    }

    #[test]
    fn any_port_serves_ipv4_and_ipv6_on_one_socket() {
        let ls = bind(&parse_listen(":0").unwrap()).unwrap();
        assert_eq!(ls.len(), 1);
        let l = &ls[0];
        l.set_nonblocking(false).unwrap();
        let port = l.local_addr().unwrap().port();
        let v4 = SocketAddr::from(([127, 0, 0, 1], port));
        if !host_has_ipv6_loopback() {
            // Only the fallback can be checked on this host.
            assert_eq!(
                l.local_addr().unwrap(),
                SocketAddr::from(([0, 0, 0, 0], port)),
                "/proc/net/if_inet6 lists no ::1 (IPv6 disabled): :0 must fall back to 0.0.0.0"
            );
            assert_eq!(accept_from(l, v4).ip(), v4.ip());
            eprintln!("IPv6 leg not run: /proc/net/if_inet6 lists no ::1");
            return;
        }
        assert_eq!(
            l.local_addr().unwrap(),
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)),
            "/proc/net/if_inet6 lists ::1, so :0 must bind [::]"
        );
        assert!(!socket2::SockRef::from(l).only_v6().unwrap());
        let peer = accept_from(l, v4);
        assert_eq!(
            peer.ip(),
            "::ffff:127.0.0.1".parse::<std::net::IpAddr>().unwrap(),
            "an IPv4 client of the dual-stack socket"
        );
        let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
        assert_eq!(accept_from(l, v6).ip(), v6.ip());
    }

    #[test]
    fn any_port_that_is_busy_is_an_error_not_an_ipv4_fallback() {
        let v4 = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = v4.local_addr().unwrap().port();
        let e = bind(&[Listen::Any(port)]).unwrap_err().to_string();
        assert!(e.contains(&format!("cannot listen on [::]:{port}")), "{e}");
        assert!(e.contains("in use"), "{e}");
        // An explicit address keeps its meaning: another IPv4 port binds.
        let ls = bind(&[Listen::Addr("127.0.0.1:0".parse().unwrap())]).unwrap();
        assert!(ls[0].local_addr().unwrap().is_ipv4());
    }

    #[derive(Clone, Default)]
    struct LogBuf(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for LogBuf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// `bind_any` with an IPv6 socket that fails with `errno`, and the log
    /// lines it wrote.
    fn bind_any_failing_v6(errno: i32) -> (anyhow::Result<std::net::TcpListener>, String) {
        let buf = LogBuf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        let r = tracing::subscriber::with_default(sub, || {
            bind_any(0, |_| Err(std::io::Error::from_raw_os_error(errno)))
        });
        let log = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        (r, log)
    }

    #[test]
    fn any_port_falls_back_to_ipv4_only_when_ipv6_is_disabled() {
        for errno in [libc::EAFNOSUPPORT, libc::EADDRNOTAVAIL] {
            let (l, log) = bind_any_failing_v6(errno);
            let l = l.unwrap();
            let a = l.local_addr().unwrap();
            assert!(a.is_ipv4() && a.ip().is_unspecified(), "errno {errno}: {a}");
            assert_eq!(log.lines().count(), 1, "errno {errno}: {log}");
            assert!(
                log.contains("INFO") && log.contains(&format!("listening on {a} (IPv4 only)")),
                "errno {errno}: {log}"
            );
        }
        // Any other failure of the IPv6 socket is reported, not papered over.
        for errno in [libc::EACCES, libc::EADDRINUSE, libc::EMFILE] {
            let (l, log) = bind_any_failing_v6(errno);
            let e = l.unwrap_err().to_string();
            assert!(e.contains("cannot listen on [::]:0"), "errno {errno}: {e}");
            assert!(log.is_empty(), "errno {errno}: {log}");
        }
    }
}
