//! TEMPORARY stand-in until the real trie lands.
pub mod retained;
pub mod trie;
