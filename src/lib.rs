//! Starling: an async MQTT broker.
pub mod codec;
pub mod config;

// STUB (config branch only): replaced on merge by the real broker module.
mod broker_stub;
pub use broker_stub::{Broker, BrokerHandle, StartError};
