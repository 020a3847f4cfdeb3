//! The loopback-only rule for targets: landrush floods whatever it is aimed at, so a target
//! outside loopback (127.0.0.0/8, ::1) is refused unless its host is named on purpose.

use std::net::SocketAddr;

use anyhow::{Context, bail};

/// Resolves `target` and refuses anything outside loopback unless its host is in `allow`.
pub async fn resolve_target(target: &str, allow: &[String]) -> anyhow::Result<SocketAddr> {
    let addr = tokio::net::lookup_host(target)
        .await
        .with_context(|| format!("--target `{target}`: expected HOST:PORT that resolves"))?
        .next()
        .with_context(|| format!("--target `{target}` resolves to no address"))?;
    if !addr.ip().is_loopback() {
        let host = target
            .rsplit_once(':')
            .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
            .unwrap_or(target);
        if !allow
            .iter()
            .any(|a| a == host || a == &addr.ip().to_string())
        {
            bail!(
                "--target {target} ({addr}) is not a loopback address. landrush floods whatever \
                 it is aimed at; to aim at another machine, name it: --allow-remote-target {host}"
            );
        }
    }
    Ok(addr)
}
