//! `distcache-node token`: mints a token (the C++ prototype's `token_gen`).
//! The token is the last line on standard output; details go to standard
//! error, so `TOKEN=$(distcache-node token … | tail -1)` works.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use super::config::DEFAULT_KEY_ID;
use super::token::{Claims, KeySet, MAX_TOKEN_LIFETIME_SECS, Role};

/// Flags of `distcache-node token`.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    /// File of `key-id:secret` lines (the node's --auth-secret-file); the last line signs.
    #[arg(long, env = "DISTCACHE_AUTH_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// The token's subject: who holds it.
    #[arg(long, alias = "subject")]
    pub user_id: String,
    /// admin, user or readonly.
    #[arg(long)]
    pub role: Role,
    /// Seconds until the token expires.
    #[arg(long, default_value_t = 3600)]
    pub validity: u64,
    /// Sign with this key id from the file instead of the last one.
    #[arg(long)]
    pub key_id: Option<String>,
    /// The secret itself, read from DISTCACHE_AUTH_SECRET (key id "default").
    #[arg(skip)]
    pub env_secret: Option<String>,
}

impl TokenArgs {
    /// The token and a one-line description of it.
    pub fn mint(&self, now: u64) -> Result<(String, String), String> {
        let mut keys = KeySet::default();
        if let Some(s) = &self.env_secret {
            keys.insert(DEFAULT_KEY_ID, s.as_bytes())?;
        }
        if let Some(path) = &self.secret_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let file = KeySet::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            keys.extend(&file);
        }
        if keys.is_empty() {
            return Err("no secret: give --secret-file FILE or set DISTCACHE_AUTH_SECRET".into());
        }
        if let Some(kid) = &self.key_id {
            keys = keys
                .only(kid)
                .ok_or_else(|| format!("no key id {kid:?} among the secrets"))?;
        }
        if self.user_id.trim().is_empty() {
            return Err("--user-id must not be empty".into());
        }
        if self.validity > MAX_TOKEN_LIFETIME_SECS {
            return Err(format!(
                "--validity {} exceeds the maximum token lifetime ({MAX_TOKEN_LIFETIME_SECS} s, 366 days)",
                self.validity
            ));
        }
        let claims = Claims {
            sub: self.user_id.clone(),
            role: self.role,
            iat: now,
            exp: now.saturating_add(self.validity),
        };
        let token = keys.sign(&claims).ok_or("cannot sign")?;
        let about = format!(
            "subject={} role={} key_id={} expires_unix={}",
            claims.sub,
            claims.role.name(),
            keys.signing_key_id().unwrap_or_default(),
            claims.exp
        );
        Ok((token, about))
    }

    /// Prints the token; returns false (after a message) on failure.
    pub fn run(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        match self.mint(now) {
            Ok((token, about)) => {
                eprintln!("{about}");
                println!("{token}");
                true
            }
            Err(e) => {
                eprintln!("distcache-node token: {e}");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mints_a_token_the_node_accepts() {
        let path = std::env::temp_dir().join(format!("distcache-keys-{}", std::process::id()));
        std::fs::write(&path, "old:first-secret\nnew:second-secret\n").expect("write");
        let mut args = TokenArgs {
            secret_file: Some(path.clone()),
            user_id: "alice".into(),
            role: Role::User,
            validity: 60,
            key_id: None,
            env_secret: None,
        };
        let (token, about) = args.mint(1_000).expect("mints");
        assert!(about.contains("key_id=new"), "{about}");
        let keys = KeySet::parse("new:second-secret").expect("keys");
        let claims = keys.verify(&token, 1_000, 5).expect("valid");
        assert_eq!(
            (claims.sub.as_str(), claims.role, claims.exp),
            ("alice", Role::User, 1_060)
        );
        args.key_id = Some("old".into());
        let (token, _) = args.mint(1_000).expect("mints");
        assert!(token.starts_with("dc1.old."));
        args.validity = MAX_TOKEN_LIFETIME_SECS + 1;
        assert!(
            args.mint(1_000)
                .unwrap_err()
                .contains("maximum token lifetime")
        );
        args.validity = 60;
        args.key_id = Some("nope".into());
        assert!(args.mint(1_000).is_err());
        args.secret_file = None;
        assert!(args.mint(1_000).unwrap_err().contains("no secret"));
        let _ = std::fs::remove_file(&path);
    }
}
