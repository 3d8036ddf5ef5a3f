//! Clients of outside systems built from a connection's stored settings, one per key, kept
//! while those settings stay the same (docs/architecture.md, "Many buildings").
//!
//! ipassan-sync keeps its tenants' clients here and salto-sync its servers'. A client holds a
//! token and a connection pool, so it is built once, on first use. An operator may rotate a
//! secret or change a timeout later: the settings are compared by their stored (sealed) text,
//! so a client is built again exactly when what it was built from changed.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why a client could not be had from stored settings.
#[derive(Debug, thiserror::Error)]
pub enum StoredClientError<E> {
    /// The stored settings do not decode as the connection they should be.
    #[error("its stored settings cannot be read: {0}")]
    Unreadable(String),
    /// The settings decoded, and building the client from them failed.
    #[error(transparent)]
    Build(E),
}

struct Built<C> {
    /// The stored settings' text the client was built from.
    from: String,
    client: C,
}

/// The clients built so far, by key (a tenant's, a server's).
pub struct StoredClients<C> {
    built: Mutex<HashMap<String, Built<C>>>,
}

impl<C> Default for StoredClients<C> {
    fn default() -> Self {
        Self {
            built: Mutex::new(HashMap::new()),
        }
    }
}

impl<C: Clone> StoredClients<C> {
    /// The client of `key` for its `stored` settings: the one kept while `stored` is what it
    /// was built from, else one `build` makes from the decoded settings (then kept in its place).
    pub fn get_or_build<S, E>(
        &self,
        key: &str,
        stored: &Value,
        build: impl FnOnce(S) -> Result<C, E>,
    ) -> Result<C, StoredClientError<E>>
    where
        S: DeserializeOwned,
    {
        let text = stored.to_string();
        // Held while building, so two messages of a new tenant build its client once.
        let mut built = self.built.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(kept) = built.get(key).filter(|b| b.from == text) {
            return Ok(kept.client.clone());
        }
        let settings =
            S::deserialize(stored).map_err(|e| StoredClientError::Unreadable(e.to_string()))?;
        let client = build(settings).map_err(StoredClientError::Build)?;
        built.insert(
            key.to_owned(),
            Built {
                from: text,
                client: client.clone(),
            },
        );
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use serde_json::json;

    use super::*;

    #[derive(serde::Deserialize)]
    struct Settings {
        url: String,
    }

    #[test]
    fn a_client_is_built_once_and_again_when_its_stored_settings_change() {
        let clients = StoredClients::<String>::default();
        let builds = Cell::new(0);
        let build = |settings: Settings| {
            builds.set(builds.get() + 1);
            Ok::<_, ()>(format!("client of {}", settings.url))
        };
        let first = json!({"url": "http://a"});
        let rotated = json!({"url": "http://b"});

        assert_eq!(
            clients.get_or_build("k", &first, build).unwrap(),
            "client of http://a"
        );
        assert_eq!(
            clients.get_or_build("k", &first, build).unwrap(),
            "client of http://a"
        );
        assert_eq!(builds.get(), 1, "the kept client serves unchanged settings");
        assert_eq!(
            clients.get_or_build("k", &rotated, build).unwrap(),
            "client of http://b"
        );
        assert_eq!(builds.get(), 2, "changed settings build a new client");
        clients.get_or_build("other", &first, build).unwrap();
        assert_eq!(builds.get(), 3, "every key has its own client");
    }

    #[test]
    fn unreadable_settings_and_failed_builds_keep_nothing() {
        let clients = StoredClients::<String>::default();
        let unreadable =
            clients.get_or_build("k", &json!({"nope": 1}), |s: Settings| Ok::<_, ()>(s.url));
        assert!(matches!(unreadable, Err(StoredClientError::Unreadable(_))));
        let failed =
            clients.get_or_build("k", &json!({"url": "x"}), |_: Settings| Err::<String, _>(7));
        assert!(matches!(failed, Err(StoredClientError::Build(7))));
        let built =
            clients.get_or_build("k", &json!({"url": "x"}), |s: Settings| Ok::<_, ()>(s.url));
        assert_eq!(built.unwrap(), "x");
    }
}
