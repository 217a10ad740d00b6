//! Bearer-token authentication: tokens are kept only as SHA-256 hashes and compared in
//! constant time; each token belongs to one tenant (the namespace of one IdP connection).

use std::sync::RwLock;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// One accepted token.
#[derive(Debug, Clone)]
pub struct TokenEntry {
    /// SHA-256 of the token.
    pub hash: [u8; 32],
    /// The tenant the token writes into.
    pub tenant: String,
    /// A label for logs (never the token).
    pub label: String,
}

/// The set of accepted tokens; it can be swapped at run time, so revocation is immediate.
#[derive(Debug, Default)]
pub struct Authenticator {
    entries: RwLock<Vec<TokenEntry>>,
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
        auth.replace(vec![TokenEntry {
            hash: hash_token(token),
            tenant: tenant.to_string(),
            label: "static".to_string(),
        }]);
        auth
    }

    /// Replaces the accepted tokens.
    pub fn replace(&self, entries: Vec<TokenEntry>) {
        *self.entries.write().unwrap_or_else(|e| e.into_inner()) = entries;
    }

    /// The tenant of a presented token. Every entry is compared, in constant time, so the
    /// time taken does not tell which entry matched.
    pub fn authenticate(&self, token: &str) -> Option<TokenEntry> {
        let presented = hash_token(token);
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let mut found = None;
        for entry in entries.iter() {
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
