//! Respawn's proxy: reads the first Minecraft packets of a connection, routes
//! it by hostname, answers the server list, and relays everything else.
#![forbid(unsafe_code)]

pub mod protocol;
