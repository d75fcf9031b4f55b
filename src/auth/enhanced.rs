//! MQTT 5 enhanced authentication (section 4.12): the `Authenticator` trait an embedder
//! implements for an Authentication Method (SCRAM, Kerberos, a token check...), and the
//! exchange state one connection drives through CONNECT/AUTH or a later re-authentication.

use bytes::Bytes;

/// What one step of an exchange decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStep {
    /// Send AUTH 0x18 (Continue authentication) with this Authentication Data and wait for the
    /// client's next AUTH.
    Continue(Option<Bytes>),
    /// Authenticated: CONNACK 0x00 (or AUTH 0x00 on re-authentication) with this data.
    Success(Option<Bytes>),
    /// Refused: CONNACK 0x87 Not authorized (or DISCONNECT 0x87 on re-authentication).
    Failure,
}

/// One Authentication Method. Registered with [`crate::BrokerBuilder::authenticator`].
pub trait Authenticator: Send + Sync + 'static {
    /// The Authentication Method name the client sends, e.g. `"SCRAM-SHA-256"`.
    fn method(&self) -> &str;
    /// Starts an exchange for a client (at CONNECT or on re-authentication).
    fn begin(&self, client_id: &str, username: Option<&str>) -> Box<dyn AuthExchange>;
}

/// The state of one exchange. `step` is called with the Authentication Data of the CONNECT or
/// AUTH packet that carried it.
pub trait AuthExchange: Send {
    fn step(&mut self, data: Option<&[u8]>) -> AuthStep;
}
