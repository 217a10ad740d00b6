//! IdP connections and their access tokens, kept in the operator's namespace.
//!
//! A connection is a ConfigMap `scim-connection-<name>` (label `scim-operator.dev/connection`)
//! whose data names the tenant namespace its IdP writes into and its state (active, paused,
//! disabled). A token is a Secret labelled `scim-operator.dev/token=true` and with the
//! connection's label, holding only the SHA-256 of the token under `sha256`. Several tokens
//! of one connection are valid at once, so a token is rotated by creating the new one,
//! updating the IdP and revoking the old one.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use tracing::{info, warn};

use crate::resources::{MANAGED_BY, MANAGED_BY_LABEL};
use crate::scim::auth::{Authenticator, ConnectionState, TokenEntry, generate_token, hash_token};

/// Label naming the connection of a ConfigMap or token Secret.
pub const CONNECTION_LABEL: &str = "scim-operator.dev/connection";
/// Label marking token Secrets.
pub const TOKEN_LABEL: &str = "scim-operator.dev/token";
/// Prefix of connection ConfigMap names.
pub const CONNECTION_PREFIX: &str = "scim-connection-";
/// Prefix of token Secret names.
pub const TOKEN_PREFIX: &str = "scim-token-";
/// Data key of a token's hash.
pub const HASH_KEY: &str = "sha256";
/// Field manager of the writes made by the token and connection commands.
const FIELD_MANAGER: &str = "scim-operator-cli";

/// Failures of connection and token management.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The API server refused or failed a call.
    #[error("failed to {action}")]
    Api {
        /// What was attempted.
        action: String,
        /// Why it failed.
        #[source]
        source: kube::Error,
    },
    /// The connection does not exist.
    #[error("connection {0:?} does not exist; create it with `scim-operator connection create`")]
    UnknownConnection(String),
    /// The token does not exist.
    #[error("token {0:?} does not exist; `scim-operator token list` shows the tokens")]
    UnknownToken(String),
    /// A name that Kubernetes cannot hold.
    #[error("{0:?} is not a valid name: use lower-case letters, digits and '-', at most 40")]
    InvalidName(String),
}

fn api_error(action: impl Into<String>) -> impl FnOnce(kube::Error) -> ConnectionError {
    let action = action.into();
    move |source| ConnectionError::Api { action, source }
}

/// One IdP connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// Name of the connection.
    pub name: String,
    /// Namespace its identities live in.
    pub tenant: String,
    /// Whether it may provision.
    pub state: ConnectionState,
}

/// What `token list` shows about a token (never the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Name of the Secret, used to revoke it.
    pub name: String,
    /// The connection it belongs to.
    pub connection: String,
    /// When it was created.
    pub created: String,
}

fn validate_name(name: &str) -> Result<(), ConnectionError> {
    let valid = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(ConnectionError::InvalidName(name.to_string()))
    }
}

/// Reads a connection from its ConfigMap; `None` when it is not one.
pub fn connection_of(config_map: &ConfigMap) -> Option<Connection> {
    let name = config_map.labels().get(CONNECTION_LABEL)?.clone();
    let data = config_map.data.as_ref()?;
    let tenant = data.get("tenant")?.trim().to_string();
    let state = match data.get("state") {
        Some(text) => ConnectionState::parse(text)?,
        None => ConnectionState::Active,
    };
    (!tenant.is_empty()).then_some(Connection {
        name,
        tenant,
        state,
    })
}

/// The tokens that authenticate, from the connection ConfigMaps and token Secrets. A token
/// whose connection is missing or malformed authenticates nothing.
pub fn build_token_entries(
    config_maps: &[Arc<ConfigMap>],
    secrets: &[Arc<Secret>],
) -> Vec<TokenEntry> {
    let connections: BTreeMap<String, Connection> = config_maps
        .iter()
        .filter_map(|cm| connection_of(cm))
        .map(|c| (c.name.clone(), c))
        .collect();
    let mut entries = Vec::new();
    for secret in secrets {
        if secret.labels().get(TOKEN_LABEL).map(String::as_str) != Some("true") {
            continue;
        }
        let Some(connection) = secret
            .labels()
            .get(CONNECTION_LABEL)
            .and_then(|c| connections.get(c))
        else {
            continue;
        };
        let Some(hash) = secret
            .data
            .as_ref()
            .and_then(|d| d.get(HASH_KEY))
            .and_then(|h| std::str::from_utf8(&h.0).ok())
            .and_then(|h| hex::decode(h.trim()).ok())
            .and_then(|h| <[u8; 32]>::try_from(h).ok())
        else {
            continue;
        };
        entries.push(TokenEntry {
            hash,
            tenant: connection.tenant.clone(),
            connection: connection.name.clone(),
            state: connection.state,
        });
    }
    entries
}

/// Keeps `auth` equal to the tokens and connections in `namespace`, through watches, so a
/// new token works and a revoked one is refused as soon as the API server tells. Returns
/// once both have been listed.
pub async fn spawn_token_watch(client: Client, namespace: &str, auth: Arc<Authenticator>) {
    let (config_maps, cm_writer) = reflector::store::<ConfigMap>();
    let (secrets, secret_writer) = reflector::store::<Secret>();
    let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let secret_api: Api<Secret> = Api::namespaced(client, namespace);
    let cm_stream = reflector::reflector(
        cm_writer,
        watcher(cm_api, watcher::Config::default().labels(CONNECTION_LABEL)).default_backoff(),
    );
    let secret_stream = reflector::reflector(
        secret_writer,
        watcher(
            secret_api,
            watcher::Config::default().labels(&format!("{TOKEN_LABEL}=true")),
        )
        .default_backoff(),
    );
    let mut events = futures::stream::select(
        cm_stream.map(|e| e.map(|_| ())).boxed(),
        secret_stream.map(|e| e.map(|_| ())).boxed(),
    );
    let ready = (config_maps.clone(), secrets.clone(), auth.clone());
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if let Err(error) = event {
                warn!(%error, "token watch failed, retrying");
                continue;
            }
            let entries = build_token_entries(&config_maps.state(), &secrets.state());
            auth.replace(entries);
        }
    });
    // The stores only report ready after their first listing, which the task above drives.
    let _ = ready.0.wait_until_ready().await;
    let _ = ready.1.wait_until_ready().await;
    ready
        .2
        .replace(build_token_entries(&ready.0.state(), &ready.1.state()));
}

/// Creates or updates a connection.
pub async fn apply_connection(
    client: Client,
    namespace: &str,
    connection: &Connection,
) -> Result<(), ConnectionError> {
    validate_name(&connection.name)?;
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let config_map = ConfigMap {
        metadata: ObjectMeta {
            name: Some(format!("{CONNECTION_PREFIX}{}", connection.name)),
            labels: Some(BTreeMap::from([
                (CONNECTION_LABEL.to_string(), connection.name.clone()),
                (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
            ])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            ("tenant".to_string(), connection.tenant.clone()),
            ("state".to_string(), connection.state.as_str().to_string()),
        ])),
        ..Default::default()
    };
    let name = format!("{CONNECTION_PREFIX}{}", connection.name);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&config_map),
    )
    .await
    .map_err(api_error(format!("write connection {}", connection.name)))?;
    info!(connection = %connection.name, tenant = %connection.tenant, state = connection.state.as_str(), "connection written");
    Ok(())
}

/// Every connection.
pub async fn list_connections(
    client: Client,
    namespace: &str,
) -> Result<Vec<Connection>, ConnectionError> {
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let list = api
        .list(&ListParams::default().labels(CONNECTION_LABEL))
        .await
        .map_err(api_error("list connections"))?;
    let mut connections: Vec<Connection> = list.items.iter().filter_map(connection_of).collect();
    connections.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(connections)
}

/// Reads one connection.
pub async fn get_connection(
    client: Client,
    namespace: &str,
    name: &str,
) -> Result<Connection, ConnectionError> {
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    api.get_opt(&format!("{CONNECTION_PREFIX}{name}"))
        .await
        .map_err(api_error(format!("read connection {name}")))?
        .as_ref()
        .and_then(connection_of)
        .ok_or_else(|| ConnectionError::UnknownConnection(name.to_string()))
}

/// Makes a token for a connection, stores its hash and returns (Secret name, token). The
/// token is not kept anywhere: print it once.
pub async fn create_token(
    client: Client,
    namespace: &str,
    connection: &str,
) -> Result<(String, String), ConnectionError> {
    get_connection(client.clone(), namespace, connection).await?;
    let token = generate_token();
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let secret = Secret {
        metadata: ObjectMeta {
            generate_name: Some(format!("{TOKEN_PREFIX}{connection}-")),
            labels: Some(BTreeMap::from([
                (TOKEN_LABEL.to_string(), "true".to_string()),
                (CONNECTION_LABEL.to_string(), connection.to_string()),
                (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
            ])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            HASH_KEY.to_string(),
            ByteString(hex::encode(hash_token(&token)).into_bytes()),
        )])),
        type_: Some("Opaque".to_string()),
        ..Default::default()
    };
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    let created = api
        .create(&params, &secret)
        .await
        .map_err(api_error("create the token Secret"))?;
    let name = created.name_any();
    info!(connection, token = %name, "token created");
    Ok((name, token))
}

/// Every token, optionally of one connection.
pub async fn list_tokens(
    client: Client,
    namespace: &str,
    connection: Option<&str>,
) -> Result<Vec<TokenInfo>, ConnectionError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let selector = match connection {
        Some(c) => format!("{TOKEN_LABEL}=true,{CONNECTION_LABEL}={c}"),
        None => format!("{TOKEN_LABEL}=true"),
    };
    let list = api
        .list_metadata(&ListParams::default().labels(&selector))
        .await
        .map_err(api_error("list tokens"))?;
    let mut tokens: Vec<TokenInfo> = list
        .items
        .iter()
        .map(|s| TokenInfo {
            name: s.name_any(),
            connection: s
                .labels()
                .get(CONNECTION_LABEL)
                .cloned()
                .unwrap_or_default(),
            created: s
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
        })
        .collect();
    tokens.sort_by(|a, b| {
        (&a.connection, &a.created, &a.name).cmp(&(&b.connection, &b.created, &b.name))
    });
    Ok(tokens)
}

/// Revokes a token by deleting its Secret.
pub async fn revoke_token(
    client: Client,
    namespace: &str,
    name: &str,
) -> Result<(), ConnectionError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let found = api
        .get_metadata_opt(name)
        .await
        .map_err(api_error(format!("read token {name}")))?;
    let is_token = |s: &kube::core::PartialObjectMeta<Secret>| {
        s.labels().get(TOKEN_LABEL).map(String::as_str) == Some("true")
    };
    if !found.as_ref().is_some_and(is_token) {
        return Err(ConnectionError::UnknownToken(name.to_string()));
    }
    api.delete(name, &DeleteParams::default())
        .await
        .map_err(api_error(format!("delete token {name}")))?;
    info!(token = name, "token revoked");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_map(name: &str, tenant: &str, state: &str) -> Arc<ConfigMap> {
        Arc::new(ConfigMap {
            metadata: ObjectMeta {
                name: Some(format!("{CONNECTION_PREFIX}{name}")),
                labels: Some(BTreeMap::from([(
                    CONNECTION_LABEL.to_string(),
                    name.to_string(),
                )])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                ("tenant".to_string(), tenant.to_string()),
                ("state".to_string(), state.to_string()),
            ])),
            ..Default::default()
        })
    }

    fn secret(connection: &str, token: &str) -> Arc<Secret> {
        Arc::new(Secret {
            metadata: ObjectMeta {
                labels: Some(BTreeMap::from([
                    (TOKEN_LABEL.to_string(), "true".to_string()),
                    (CONNECTION_LABEL.to_string(), connection.to_string()),
                ])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                HASH_KEY.to_string(),
                ByteString(hex::encode(hash_token(token)).into_bytes()),
            )])),
            ..Default::default()
        })
    }

    #[test]
    fn tokens_map_to_their_connection_tenant_and_state() {
        let entries = build_token_entries(
            &[
                config_map("okta", "idp-okta", "active"),
                config_map("entra", "idp-entra", "paused"),
            ],
            &[
                secret("okta", "a"),
                secret("okta", "b"),
                secret("entra", "c"),
                secret("gone", "d"),
            ],
        );
        let auth = Authenticator::empty();
        auth.replace(entries);
        let tenant = |t: &str| auth.authenticate(t).map(|e| (e.tenant, e.state));
        assert_eq!(
            tenant("a"),
            Some(("idp-okta".into(), ConnectionState::Active))
        );
        assert_eq!(
            tenant("b"),
            Some(("idp-okta".into(), ConnectionState::Active))
        );
        assert_eq!(
            tenant("c"),
            Some(("idp-entra".into(), ConnectionState::Paused))
        );
        assert_eq!(
            tenant("d"),
            None,
            "a token of a missing connection authenticates nothing"
        );
    }

    #[test]
    fn a_connection_with_an_unknown_state_is_not_a_connection() {
        assert!(connection_of(&config_map("x", "t", "sleeping")).is_none());
        assert!(connection_of(&config_map("x", "", "active")).is_none());
    }

    #[test]
    fn names_must_fit_kubernetes() {
        assert!(validate_name("okta-prod").is_ok());
        assert!(validate_name("Okta").is_err());
        assert!(validate_name("-x").is_err());
    }
}
