//! What the node's and the proxy's command lines share beyond the TLS
//! flags: argv parsing that keeps `--check-config`'s promise of exit code 1
//! for an unusable configuration, a refused flag included.

use clap::Parser;

/// Parses argv as clap's `parse` does, except that with `--check-config` a
/// bad flag exits 1 (what a failed check exits with) instead of clap's 2.
pub fn parse_or_exit<A: Parser>() -> A {
    match A::try_parse() {
        Ok(a) => a,
        Err(e) if e.use_stderr() && std::env::args_os().any(|a| a == "--check-config") => {
            let _ = e.print();
            std::process::exit(1)
        }
        Err(e) => e.exit(),
    }
}
