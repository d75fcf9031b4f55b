//! Starling: an async MQTT broker.
pub mod codec;
pub mod router;
