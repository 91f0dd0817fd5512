//! Respawn plugin sync: download, verify and place a server's plugin jars.
#![forbid(unsafe_code)]
