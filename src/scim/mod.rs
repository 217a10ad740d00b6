//! The SCIM 2.0 protocol: schemas, filters, PATCH, input tolerance and the HTTP surface.

pub mod auth;
pub mod bulk;
pub mod error;
pub mod filter;
pub mod http;
pub mod normalize;
pub mod patch;
pub mod schema;
pub mod service;
