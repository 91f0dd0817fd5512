//! HTTP-level tests of the management API. Every test in `both!` runs twice:
//! on a fresh SQLite file and on a fresh PostgreSQL database.

mod common;

mod backups;
mod errors;
mod isolation;
mod openapi;
mod plans;
mod plugins;
mod s3;
mod servers;
mod system;
mod tenants;
