//! The file-descriptor budget of a server process. Every connection (and
//! the WAL, snapshots, listeners) holds a descriptor, and the usual soft
//! limit is 1,024, far below the default `--max-connections` of 10,000: past
//! it `accept` fails and the process stops taking connections at all, on
//! every port. So at start-up the soft limit is raised to the hard limit,
//! and a connection bound that still does not fit is lowered to what does,
//! with a log line that says so.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors kept for what is not a client connection: listeners, the
/// WAL and snapshot files, connections to nodes, admin clients.
pub const RESERVED_FDS: u64 = 256;

/// Raises the soft descriptor limit to the hard one; returns the limit now
/// in force (`None` when unlimited or unknown).
pub fn raise_limit() -> Option<u64> {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    if current != maximum {
        let raised = Rlimit {
            current: maximum,
            maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(error = %e, "could not raise the file-descriptor limit");
        }
    }
    getrlimit(Resource::Nofile).current
}

/// `wanted` connections, lowered to fit `limit` descriptors after
/// [`RESERVED_FDS`] when it does not (with a warning naming `flag`).
pub fn clamp_connections(wanted: usize, limit: Option<u64>, flag: &str) -> usize {
    let Some(limit) = limit else {
        return wanted;
    };
    let fits = usize::try_from(limit.saturating_sub(RESERVED_FDS))
        .unwrap_or(usize::MAX)
        .max(1);
    if wanted <= fits {
        return wanted;
    }
    tracing::warn!(
        wanted,
        allowed = fits,
        fd_limit = limit,
        "{flag} lowered to fit the file-descriptor limit (raise it with `ulimit -n` or LimitNOFILE=)"
    );
    fits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_that_does_not_fit_the_limit_is_lowered() {
        assert_eq!(
            clamp_connections(10_000, Some(1024), "--max-connections"),
            768
        );
        assert_eq!(clamp_connections(500, Some(1024), "--max-connections"), 500);
        assert_eq!(clamp_connections(10_000, None, "--max-connections"), 10_000);
        assert_eq!(clamp_connections(10, Some(10), "--max-connections"), 1);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let before = getrlimit(Resource::Nofile);
        let now = raise_limit();
        assert_eq!(now, before.maximum);
    }
}
