//! Sealing the secrets of buildings' connections (client secrets, SHIP passwords and keys) with
//! `CONNECX__SECRETS__KEY`, so that they are never in clear in a database row, an event on the
//! broker or a log line.
//!
//! A secret is sealed with ChaCha20-Poly1305 (aws-lc-rs's AEAD, the build's one crypto provider) under a random 96-bit nonce, with the
//! name of the field it belongs to as associated data (a sealed password cannot be passed off as
//! a key). Its text is `cxs1.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>`; the key id (the first
//! 8 hex digits of a SHA-256 of the key) says which key opens it without trying each.
//!
//! Rotation: the new key becomes `CONNECX__SECRETS__KEY`, the old one goes into
//! `CONNECX__SECRETS__PREVIOUS_KEYS` (comma-separated). Secrets sealed under a previous key still
//! open, and [`Opened::resealed`] hands back the same secret sealed under the current key so the
//! holder can write it back ("re-sealing on read"). Once every holder has re-sealed, the previous
//! key can go.

use std::fmt;

use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use contracts::SealedSecret;

use crate::config::ConfigError;

const PREFIX: &str = "cxs1";
const KEY_BYTES: usize = 32;

/// `CONNECX__SECRETS__*`. Both optional: a deployment whose buildings all use the default
/// connections holds no sealed secret and needs no key.
#[derive(Clone, Default, Deserialize)]
pub struct SecretsSettings {
    /// `CONNECX__SECRETS__KEY`: 32 random bytes, base64 (`openssl rand -base64 32`).
    #[serde(default)]
    pub key: Option<String>,
    /// `CONNECX__SECRETS__PREVIOUS_KEYS`: earlier keys, comma-separated, for rotation.
    #[serde(default)]
    pub previous_keys: Option<String>,
}

impl fmt::Debug for SecretsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretsSettings")
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field(
                "previous_keys",
                &self.previous_keys.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl SecretsSettings {
    /// The sealer these keys make, `None` when no key is set. A key that is not base64 of 32
    /// bytes is an error naming its variable.
    pub fn sealer(&self) -> Result<Option<Sealer>, ConfigError> {
        let Some(current) = self.key.as_deref().filter(|k| !k.trim().is_empty()) else {
            if self
                .previous_keys
                .as_deref()
                .is_some_and(|k| !k.trim().is_empty())
            {
                return Err(ConfigError::invalid(
                    "secrets.key",
                    "must be set when secrets.previous_keys is (the current key seals, previous ones only open)",
                ));
            }
            return Ok(None);
        };
        let current = SealingKey::from_base64(current)
            .map_err(|problem| ConfigError::invalid("secrets.key", problem))?;
        let previous = self
            .previous_keys
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .enumerate()
            .map(|(i, k)| {
                SealingKey::from_base64(k).map_err(|problem| {
                    ConfigError::invalid(
                        "secrets.previous_keys",
                        format!("(key {} of the list) {problem}", i + 1),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Sealer { current, previous }))
    }

    /// Checks the keys parse (for `Validate`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.sealer().map(|_| ())
    }
}

/// One key and its id.
struct SealingKey {
    id: String,
    aead: LessSafeKey,
}

impl SealingKey {
    fn from_base64(text: &str) -> Result<Self, String> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| "must be base64 (e.g. the output of `openssl rand -base64 32`)")?;
        if bytes.len() != KEY_BYTES {
            return Err(format!(
                "must be {KEY_BYTES} bytes once base64-decoded, not {}",
                bytes.len()
            ));
        }
        let id = hex_prefix(&Sha256::digest(
            [b"connecx-secrets-key-id:".as_slice(), &bytes].concat(),
        ));
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &bytes)
            .map_err(|_| "is not a ChaCha20-Poly1305 key".to_owned())?;
        Ok(Self {
            id,
            aead: LessSafeKey::new(unbound),
        })
    }
}

fn hex_prefix(digest: &[u8]) -> String {
    digest.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// A secret in clear, for the moment it is used. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The secret's text, to hand to the outside system that wants it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a sealed secret did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error(
        "it was sealed under key {key_id}, which is neither CONNECX__SECRETS__KEY (key {current}) \
         nor one of CONNECX__SECRETS__PREVIOUS_KEYS"
    )]
    UnknownKey { key_id: String, current: String },
    #[error(
        "it does not open with CONNECX__SECRETS__KEY's key {key_id}: it was changed, or sealed \
         for another field"
    )]
    Tampered { key_id: String },
    #[error("it is not a sealed secret (`cxs1.<key id>.<data>` expected)")]
    Malformed,
    #[error("no CONNECX__SECRETS__KEY is set, so sealed secrets cannot be opened")]
    NoKey,
}

/// A secret opened, and — when it was sealed under a previous key — the same secret sealed
/// under the current one, to be written back.
#[derive(Debug)]
pub struct Opened {
    pub secret: Secret,
    pub resealed: Option<SealedSecret>,
}

/// Seals under the current key; opens under it or a previous one.
pub struct Sealer {
    current: SealingKey,
    previous: Vec<SealingKey>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("current", &self.current.id)
            .field(
                "previous",
                &self.previous.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Sealer {
    /// The id of the key that seals.
    pub fn current_key_id(&self) -> &str {
        &self.current.id
    }

    /// Seals `secret` for `field` (e.g. `ipassan.client_secret`), under a fresh random nonce.
    pub fn seal(&self, secret: &str, field: &str) -> SealedSecret {
        let mut nonce = [0u8; NONCE_LEN];
        // The system RNG failing is not something to carry on through: a secret sealed with a
        // predictable nonce is worse than a crash.
        #[allow(clippy::expect_used)]
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system's random number generator works");
        let mut data = secret.as_bytes().to_vec();
        #[allow(clippy::expect_used)]
        self.current
            .aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(field.as_bytes()),
                &mut data,
            )
            .expect("ChaCha20-Poly1305 seals any input shorter than 256 GiB");
        let mut packed = nonce.to_vec();
        packed.extend_from_slice(&data);
        SealedSecret(format!(
            "{PREFIX}.{}.{}",
            self.current.id,
            URL_SAFE_NO_PAD.encode(packed)
        ))
    }

    /// Opens `sealed`, which must have been sealed for `field`.
    pub fn open(&self, sealed: &SealedSecret, field: &str) -> Result<Opened, OpenError> {
        let mut parts = sealed.0.splitn(3, '.');
        let (Some(PREFIX), Some(key_id), Some(data)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(OpenError::Malformed);
        };
        let (key, is_current) = if key_id == self.current.id {
            (&self.current, true)
        } else {
            let key = self
                .previous
                .iter()
                .find(|k| k.id == key_id)
                .ok_or_else(|| OpenError::UnknownKey {
                    key_id: key_id.to_owned(),
                    current: self.current.id.clone(),
                })?;
            (key, false)
        };
        let packed = URL_SAFE_NO_PAD
            .decode(data)
            .map_err(|_| OpenError::Malformed)?;
        if packed.len() < NONCE_LEN {
            return Err(OpenError::Malformed);
        }
        let (nonce, ciphertext) = packed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError::Malformed)?;
        let mut buffer = ciphertext.to_vec();
        let tampered = || OpenError::Tampered {
            key_id: key.id.clone(),
        };
        let clear = key
            .aead
            .open_in_place(nonce, Aad::from(field.as_bytes()), &mut buffer)
            .map_err(|_| tampered())?;
        let text = std::str::from_utf8(clear)
            .map_err(|_| tampered())?
            .to_owned();
        let resealed = (!is_current).then(|| self.seal(&text, field));
        Ok(Opened {
            secret: Secret(text),
            resealed,
        })
    }
}

/// Opens with an optional sealer: [`OpenError::NoKey`] when no key is configured.
pub fn open_with(
    sealer: Option<&Sealer>,
    sealed: &SealedSecret,
    field: &str,
) -> Result<Opened, OpenError> {
    sealer.ok_or(OpenError::NoKey)?.open(sealed, field)
}

/// The sealed secrets of stored connection settings `S`, each with the field it was sealed for.
pub type SealedFields<S> = fn(&mut S) -> Vec<(&mut SealedSecret, &'static str)>;

/// Opens every secret of stored settings (a tenant's, a server's): `Ok(Some(settings))` with
/// them re-sealed under the current key when one was sealed under a previous key, `Ok(None)`
/// when all are under the current key; the reason when the settings do not decode or a secret
/// does not open.
pub fn reseal_stored<S>(
    sealer: Option<&Sealer>,
    stored: &serde_json::Value,
    sealed_fields: SealedFields<S>,
) -> Result<Option<serde_json::Value>, String>
where
    S: serde::Serialize + serde::de::DeserializeOwned,
{
    let mut settings = S::deserialize(stored).map_err(|e| e.to_string())?;
    let mut resealed_any = false;
    for (secret, field) in sealed_fields(&mut settings) {
        let opened = open_with(sealer, secret, field).map_err(|e| e.to_string())?;
        if let Some(resealed) = opened.resealed {
            *secret = resealed;
            resealed_any = true;
        }
    }
    if !resealed_any {
        return Ok(None);
    }
    serde_json::to_value(&settings)
        .map(Some)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const KEY_B: &str = "HxwdGxoZGBcWFRQTEhEQDw4NDAsKCQgHBgUEAwIBAAA=";

    fn sealer(key: &str, previous: Option<&str>) -> Sealer {
        SecretsSettings {
            key: Some(key.into()),
            previous_keys: previous.map(String::from),
        }
        .sealer()
        .unwrap()
        .unwrap()
    }

    #[test]
    fn a_sealed_secret_opens_for_its_field_only_and_never_shows_in_clear() {
        let a = sealer(KEY_A, None);
        let sealed = a.seal("s3cret-value", "ipassan.client_secret");
        assert!(!sealed.0.contains("s3cret"));
        assert_eq!(sealed.key_id(), Some(a.current_key_id()));
        let opened = a.open(&sealed, "ipassan.client_secret").unwrap();
        assert_eq!(opened.secret.expose(), "s3cret-value");
        assert!(opened.resealed.is_none());
        assert!(!format!("{:?}", opened.secret).contains("s3cret"));
        assert!(matches!(
            a.open(&sealed, "salto.password"),
            Err(OpenError::Tampered { .. })
        ));
    }

    #[test]
    fn the_same_secret_seals_differently_each_time() {
        let a = sealer(KEY_A, None);
        assert_ne!(a.seal("x", "f"), a.seal("x", "f"));
    }

    #[test]
    fn a_secret_sealed_under_a_previous_key_opens_and_comes_back_resealed_under_the_current() {
        let old = sealer(KEY_A, None);
        let sealed = old.seal("rotate-me", "salto.key");
        let rotated = sealer(KEY_B, Some(KEY_A));
        let opened = rotated.open(&sealed, "salto.key").unwrap();
        assert_eq!(opened.secret.expose(), "rotate-me");
        let resealed = opened.resealed.unwrap();
        assert_eq!(resealed.key_id(), Some(rotated.current_key_id()));
        let again = rotated.open(&resealed, "salto.key").unwrap();
        assert_eq!(again.secret.expose(), "rotate-me");
        assert!(again.resealed.is_none());
    }

    #[test]
    fn a_secret_of_an_unknown_key_names_both_keys() {
        let sealed = sealer(KEY_A, None).seal("x", "f");
        let error = sealer(KEY_B, None).open(&sealed, "f").unwrap_err();
        let text = error.to_string();
        assert!(text.contains("CONNECX__SECRETS__KEY"), "{text}");
        assert!(text.contains(sealed.key_id().unwrap()), "{text}");
        assert!(matches!(
            open_with(None, &sealed, "f"),
            Err(OpenError::NoKey)
        ));
        assert_eq!(
            sealer(KEY_A, None)
                .open(&SealedSecret("plain".into()), "f")
                .unwrap_err(),
            OpenError::Malformed
        );
    }

    #[test]
    fn a_bad_key_is_named_by_its_variable() {
        let short = SecretsSettings {
            key: Some(STANDARD.encode([1u8; 16])),
            previous_keys: None,
        };
        let text = short.sealer().unwrap_err().to_string();
        assert!(
            text.contains("CONNECX__SECRETS__KEY") && text.contains("32 bytes"),
            "{text}"
        );
        let bad_previous = SecretsSettings {
            key: Some(KEY_A.into()),
            previous_keys: Some(format!("{KEY_B}, not-base64!")),
        };
        let text = bad_previous.sealer().unwrap_err().to_string();
        assert!(
            text.contains("CONNECX__SECRETS__PREVIOUS_KEYS") && text.contains("key 2"),
            "{text}"
        );
        assert!(SecretsSettings::default().sealer().unwrap().is_none());
        assert!(format!("{bad_previous:?}").contains("<redacted>"));
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Stored {
        url: String,
        secret: SealedSecret,
    }

    fn secret_of(stored: &mut Stored) -> Vec<(&mut SealedSecret, &'static str)> {
        vec![(&mut stored.secret, "test.secret")]
    }

    #[test]
    fn stored_settings_are_resealed_only_when_a_secret_is_under_a_previous_key() {
        let old = sealer(KEY_B, None);
        let rotated = sealer(KEY_A, Some(KEY_B));
        let stored = serde_json::json!({"url": "u", "secret": old.seal("pw", "test.secret")});

        let resealed = reseal_stored(Some(&rotated), &stored, secret_of)
            .unwrap()
            .expect("sealed under the previous key: resealed");
        let resealed: Stored = serde_json::from_value(resealed).unwrap();
        assert_eq!(resealed.url, "u", "the rest of the settings is kept");
        let opened = rotated.open(&resealed.secret, "test.secret").unwrap();
        assert_eq!(opened.secret.expose(), "pw");
        assert!(opened.resealed.is_none(), "now under the current key");

        let current = serde_json::json!({"url": "u", "secret": resealed.secret});
        assert_eq!(reseal_stored(Some(&rotated), &current, secret_of), Ok(None));
        assert!(reseal_stored(None, &current, secret_of).is_err(), "no key");
        let unreadable = serde_json::json!({"url": 1});
        assert!(reseal_stored(Some(&rotated), &unreadable, secret_of).is_err());
    }
}
