//! The accepted secrets as a reload can replace them while the process
//! serves: one [`LiveKeys`] per process, read by every token check, and the
//! [`Signer`] a verified caller keeps so that a long-lived stream or RESP
//! session notices when a reload retired the key its token was signed with.
//!
//! Lock rule: the lock guards only the swap of an `Arc`; readers clone the
//! `Arc` and verify outside it, so a reload never waits for a request.

use std::fmt;
use std::sync::Arc;

use parking_lot::RwLock;

use super::token::KeySet;

/// The secrets tokens are checked against, replaceable as a whole.
pub struct LiveKeys(RwLock<Arc<KeySet>>);

impl fmt::Debug for LiveKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.current().fmt(f)
    }
}

impl LiveKeys {
    /// Starts with `keys`.
    pub fn new(keys: KeySet) -> Self {
        Self(RwLock::new(Arc::new(keys)))
    }

    /// The secrets in force now.
    pub fn current(&self) -> Arc<KeySet> {
        self.0.read().clone()
    }

    /// Puts `keys` in force for every check from now on.
    pub fn replace(&self, keys: KeySet) {
        *self.0.write() = Arc::new(keys);
    }
}

/// The key a token was verified with, kept by whoever holds the verified
/// caller: [`Signer::retired`] says whether the secrets in force still
/// accept it (same key id, same secret).
#[derive(Clone)]
pub struct Signer {
    keys: Arc<LiveKeys>,
    kid: Arc<str>,
    secret: Arc<[u8]>,
}

impl Signer {
    /// The signer of a token with key id `kid` that `current` verified.
    pub(crate) fn of(keys: Arc<LiveKeys>, current: &KeySet, kid: &str) -> Option<Self> {
        Some(Self {
            secret: current.secret(kid)?,
            kid: kid.into(),
            keys,
        })
    }

    /// True once a reload removed the key or changed its secret.
    pub fn retired(&self) -> bool {
        !self.keys.current().holds(&self.kid, &self.secret)
    }
}

impl PartialEq for Signer {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.keys, &other.keys) && self.kid == other.kid && self.secret == other.secret
    }
}

impl Eq for Signer {}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.kid)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signer_is_retired_when_its_key_goes_or_changes() {
        let set = |lines: &str| KeySet::parse(lines).expect("keys");
        let live = Arc::new(LiveKeys::new(set("k1:aaaaaaaa\n")));
        let signer = Signer::of(live.clone(), &live.current(), "k1").expect("k1");
        assert!(!signer.retired());
        live.replace(set("k1:aaaaaaaa\nk2:bbbbbbbb\n"));
        assert!(!signer.retired(), "same key, same secret");
        live.replace(set("k1:cccccccc\n"));
        assert!(signer.retired(), "same id, new secret");
        live.replace(set("k2:bbbbbbbb\n"));
        assert!(signer.retired(), "key removed");
        assert!(Signer::of(live.clone(), &live.current(), "k1").is_none());
    }
}
