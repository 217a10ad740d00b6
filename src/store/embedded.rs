//! The embedded backend: each object is one YAML file under `<dir>/<namespace>/<plural>/`.
//! One process owns the folder; a mutex serialises writes, so uniqueness holds under races.

use std::path::{Path, PathBuf};

use kube::ResourceExt;
use tokio::sync::Mutex;

use super::StoreError;
use super::index::Index;
use super::kind::ScimKind;

/// A folder of YAML files.
pub struct EmbeddedBackend {
    dir: PathBuf,
    version: Mutex<u64>,
}

impl EmbeddedBackend {
    /// Opens (creating if needed) the folder and loads every object into the indexes.
    pub fn open<U: ScimKind, G: ScimKind>(
        dir: &Path,
        users: &Index<U>,
        groups: &Index<G>,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(io_error)?;
        let mut max_version = 0;
        let loaded_users = load_all::<U>(dir, &mut max_version)?;
        let loaded_groups = load_all::<G>(dir, &mut max_version)?;
        users.replace_all(loaded_users);
        groups.replace_all(loaded_groups);
        Ok(Self {
            dir: dir.to_path_buf(),
            version: Mutex::new(max_version),
        })
    }

    fn path_of<K: ScimKind>(&self, namespace: &str, name: &str) -> PathBuf {
        self.dir
            .join(namespace)
            .join(K::plural(&()).as_ref())
            .join(format!("{name}.yaml"))
    }

    pub(super) async fn create<K: ScimKind>(&self, obj: &K) -> Result<K, StoreError> {
        let mut version = self.version.lock().await;
        let path = self.path_of::<K>(&obj.namespace().unwrap_or_default(), &obj.name_any());
        if path.exists() {
            return Err(StoreError::AlreadyExists);
        }
        let mut stored = obj.clone();
        *version += 1;
        let meta = stored.meta_mut();
        meta.resource_version = Some(version.to_string());
        meta.generation = Some(1);
        meta.uid = Some(uuid::Uuid::new_v4().to_string());
        meta.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        write_file(&path, &stored)?;
        Ok(stored)
    }

    pub(super) async fn replace<K: ScimKind>(&self, obj: &K) -> Result<K, StoreError> {
        let mut version = self.version.lock().await;
        let path = self.path_of::<K>(&obj.namespace().unwrap_or_default(), &obj.name_any());
        let current: K = read_file(&path)?.ok_or(StoreError::NotFound)?;
        if current.uid() != obj.uid() || current.resource_version() != obj.resource_version() {
            return Err(StoreError::Conflict);
        }
        let mut stored = obj.clone();
        *version += 1;
        stored.meta_mut().resource_version = Some(version.to_string());
        stored.meta_mut().creation_timestamp = current.meta().creation_timestamp.clone();
        // As the API server does for custom resources with a status subresource.
        let changed = stored.spec() != current.spec();
        let generation = current.meta().generation.unwrap_or(1);
        stored.meta_mut().generation = Some(if changed { generation + 1 } else { generation });
        write_file(&path, &stored)?;
        Ok(stored)
    }

    pub(super) async fn delete<K: ScimKind>(&self, obj: &K, exact: bool) -> Result<(), StoreError> {
        let _version = self.version.lock().await;
        let path = self.path_of::<K>(&obj.namespace().unwrap_or_default(), &obj.name_any());
        let current: K = read_file(&path)?.ok_or(StoreError::NotFound)?;
        if current.uid() != obj.uid() {
            return Err(StoreError::NotFound);
        }
        if exact && current.resource_version() != obj.resource_version() {
            return Err(StoreError::Conflict);
        }
        std::fs::remove_file(&path).map_err(io_error)
    }

    pub(super) async fn get_live<K: ScimKind>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<K>, StoreError> {
        let _version = self.version.lock().await;
        read_file(&self.path_of::<K>(namespace, name))
    }
}

fn io_error(e: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("failed to access the data folder: {e}"))
}

fn read_file<K: ScimKind>(path: &Path) -> Result<Option<K>, StoreError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_norway::from_str(&text).map(Some).map_err(|e| {
            StoreError::Unavailable(format!("failed to parse {}: {e}", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(e)),
    }
}

/// Writes through a temporary file and a rename, so a crash never leaves half a file.
fn write_file<K: ScimKind>(path: &Path, obj: &K) -> Result<(), StoreError> {
    let text = serde_norway::to_string(obj)
        .map_err(|e| StoreError::Invalid(format!("failed to serialize: {e}")))?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_error)?;
    }
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).map_err(io_error)?;
    std::fs::rename(&tmp, path).map_err(io_error)
}

fn load_all<K: ScimKind>(dir: &Path, max_version: &mut u64) -> Result<Vec<K>, StoreError> {
    let mut objs = Vec::new();
    let Ok(namespaces) = std::fs::read_dir(dir) else {
        return Ok(objs);
    };
    for ns in namespaces.flatten() {
        let kind_dir = ns.path().join(K::plural(&()).as_ref());
        let Ok(files) = std::fs::read_dir(&kind_dir) else {
            continue;
        };
        for file in files.flatten() {
            let path = file.path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            if let Some(obj) = read_file::<K>(&path)? {
                let version = obj
                    .resource_version()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                *max_version = (*max_version).max(version);
                objs.push(obj);
            }
        }
    }
    Ok(objs)
}
