//! Respawn on Kubernetes: the `MinecraftServer` resource, rendering it into a
//! StatefulSet and Service, and the controller that scales them.
#![forbid(unsafe_code)]

pub mod controller;
pub mod crd;
pub mod discovery;
pub mod hostnames;
pub mod leader;
pub mod render;
pub mod signals;
