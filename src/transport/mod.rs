//! Listeners: accept loops that turn sockets into byte streams for [`crate::connection::serve`].
//! An accept loop only takes a connection permit and spawns; every handshake (TLS, WebSocket,
//! CONNECT) happens inside the connection's own task under a timeout.

pub mod tcp;
