//! The code every command shares to talk to the services.
//!
//! - [`counting`]: a socket wrapper that counts bytes each way, headers included.
//! - [`http`]: a kept-alive HTTP/1.1 client (hyper) over a counted socket.
//! - [`ws`]: WebSocket connections (tokio-tungstenite) over a counted socket, and the protocol's
//!   frames in and out.

pub mod counting;
pub mod http;
pub mod ws;
