//! Bearer-token authentication: tokens are kept only as SHA-256 hashes and compared in
//! constant time; each token belongs to one tenant (the namespace of one IdP connection).

use std::sync::RwLock;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Whether a connection's IdP may provision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ConnectionState {
    /// Requests are served.
    #[default]
    Active,
    /// Requests answer 503 with Retry-After, so the IdP retries later; nothing is lost.
    Paused,
    /// Requests are refused with 403; identities stay in place.
    Disabled,
}

impl ConnectionState {
    /// Parses the state as written in a connection's settings.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "active" | "" => Some(Self::Active),
            "paused" => Some(Self::Paused),
            "disabled" => Some(Self::Disabled),
            _ => None,
        }
    }

    /// The state as written in a connection's settings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Disabled => "disabled",
        }
    }
}

/// One accepted token.
#[derive(Debug, Clone)]
pub struct TokenEntry {
    /// SHA-256 of the token.
    pub hash: [u8; 32],
    /// The tenant the token writes into.
    pub tenant: String,
    /// The connection the token belongs to (never the token itself).
    pub connection: String,
    /// Whether the connection is active, paused or disabled.
    pub state: ConnectionState,
}

/// The set of accepted tokens; it can be swapped at run time, so revocation is immediate.
#[derive(Debug, Default)]
pub struct Authenticator {
    entries: RwLock<Vec<TokenEntry>>,
    fixed: RwLock<Vec<TokenEntry>>,
}

/// Hashes a token the way it is stored.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random token: 32 bytes of OS randomness, hex encoded, with a recognisable prefix.
pub fn generate_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("scim_{}", hex::encode(bytes))
}

impl Authenticator {
    /// An authenticator holding one token for one tenant.
    pub fn single(token: &str, tenant: &str) -> Self {
        let auth = Self::default();
        auth.set_fixed(vec![TokenEntry {
            hash: hash_token(token),
            tenant: tenant.to_string(),
            connection: "static".to_string(),
            state: ConnectionState::Active,
        }]);
        auth
    }

    /// An authenticator that accepts no token until [`Authenticator::replace`] is called.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Replaces the tokens that come from connections.
    pub fn replace(&self, entries: Vec<TokenEntry>) {
        *self.entries.write().unwrap_or_else(|e| e.into_inner()) = entries;
    }

    /// Sets the tokens given at start (from the environment), kept beside the others.
    pub fn set_fixed(&self, entries: Vec<TokenEntry>) {
        *self.fixed.write().unwrap_or_else(|e| e.into_inner()) = entries;
    }

    /// The tenant of a presented token. Every entry is compared, in constant time, so the
    /// time taken does not tell which entry matched.
    pub fn authenticate(&self, token: &str) -> Option<TokenEntry> {
        let presented = hash_token(token);
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let fixed = self.fixed.read().unwrap_or_else(|e| e.into_inner());
        let mut found = None;
        for entry in entries.iter().chain(fixed.iter()) {
            if bool::from(entry.hash.ct_eq(&presented)) && found.is_none() {
                found = Some(entry.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_maps_to_its_tenant_and_others_are_refused() {
        let auth = Authenticator::single("secret", "tenant-a");
        assert_eq!(
            auth.authenticate("secret").map(|e| e.tenant),
            Some("tenant-a".to_string())
        );
        assert!(auth.authenticate("secret ").is_none());
        assert!(auth.authenticate("").is_none());
    }

    #[test]
    fn generated_tokens_differ() {
        assert_ne!(generate_token(), generate_token());
        assert!(generate_token().starts_with("scim_"));
    }
}
