//! Re-authentication of a v5 connection [MQTT-4.12.1-1] with the enhanced-authentication
//! method of its CONNECT, and the state it keeps (boxed in the Handler: most connections have
//! none).

use std::sync::Arc;

use super::{Close, Handler, Outbox};
use crate::auth::enhanced::{AuthExchange, AuthStep, Authenticator};
use crate::codec::{self, Packet, Properties, ReasonCode};

/// A v5 connection's enhanced authentication [MQTT-4.12.0-1], kept for re-authentication.
pub(super) struct Enhanced {
    /// The authenticator of CONNECT's Authentication Method.
    pub(super) authenticator: Arc<dyn Authenticator>,
    /// A re-authentication in progress.
    pub(super) reauth: Option<Box<dyn AuthExchange>>,
}

impl Handler {
    /// Re-authentication [MQTT-4.12.1-1]: AUTH 0x19 starts it, AUTH 0x18 continues it, always
    /// with the Authentication Method of CONNECT.
    pub(super) fn on_auth(&mut self, a: codec::Auth, out: &mut Outbox) -> Result<(), Close> {
        let Some(enhanced) = self.rare.as_mut().and_then(|r| r.enhanced.as_mut()) else {
            return Err(Close::Protocol(
                ReasonCode::PROTOCOL_ERROR,
                "[MQTT-4.12.0-7] AUTH without an Authentication Method in CONNECT",
            ));
        };
        let method = enhanced.authenticator.method().to_string();
        if a.properties.authentication_method.as_deref() != Some(method.as_str()) {
            return Err(Close::Protocol(
                ReasonCode::PROTOCOL_ERROR,
                "[MQTT-4.12.1-1] AUTH with a different Authentication Method",
            ));
        }
        if a.reason == ReasonCode::REAUTHENTICATE {
            let username = self.session.meta().username;
            let exchange = enhanced
                .authenticator
                .begin(&self.session.client_id, username.as_deref());
            enhanced.reauth = Some(exchange);
        } else if a.reason != ReasonCode::CONTINUE_AUTHENTICATION || enhanced.reauth.is_none() {
            return Err(Close::Protocol(
                ReasonCode::PROTOCOL_ERROR,
                "[MQTT 5.0 §3.15.2.1][MQTT-4.12.1-1] AUTH reason code other than 0x19, or 0x18 with no re-authentication under way",
            ));
        }
        let Some(exchange) = enhanced.reauth.as_mut() else {
            return Ok(());
        };
        let (reason, data) = match exchange.step(a.properties.authentication_data.as_deref()) {
            AuthStep::Continue(d) => (ReasonCode::CONTINUE_AUTHENTICATION, d),
            AuthStep::Success(d) => {
                enhanced.reauth = None;
                (ReasonCode::SUCCESS, d)
            }
            AuthStep::Failure => {
                return Err(Close::Server(
                    ReasonCode::NOT_AUTHORIZED,
                    "re-authentication failed",
                ))
            }
        };
        self.send(
            &Packet::Auth(codec::Auth {
                reason,
                properties: Properties {
                    authentication_method: Some(method),
                    authentication_data: data,
                    ..Default::default()
                }
                .into(),
            }),
            out,
        );
        Ok(())
    }
}
