//! Binding TCP listeners (the accept loop, shared with unix sockets, is in
//! [`super::accept`]).

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// Binds `addr` with a listen queue of `backlog` connections (the kernel caps it at
/// `net.core.somaxconn`). Like [`TcpListener::bind`], it sets `SO_REUSEADDR` so a restarted
/// broker can bind while old connections linger in TIME_WAIT.
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}
