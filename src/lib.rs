//! scim-operator: provision users and groups into Kubernetes over SCIM 2.0 and turn them
//! into access.

pub mod connections;
pub mod controller;
pub mod leader;
pub mod platform;
pub mod render;
pub mod resources;
pub mod scim;
pub mod server;
pub mod store;
pub mod telemetry;
