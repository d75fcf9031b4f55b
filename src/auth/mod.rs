//! Who may connect and what they may do: enhanced authentication (MQTT 5 AUTH).
pub mod enhanced;
